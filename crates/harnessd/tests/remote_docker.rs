//! A docker service placed on a node (`host:`) through the real daemon: its
//! container runs on the node's engine, reached through `ssh NODE docker
//! system dial-stdio`, and a local process waits for it to be healthy and
//! sees it at the node's address. When the node is cut off its network, the
//! service shows `unknown` with a reason naming the node; when the node is
//! back, the same container runs on and is followed again: no second
//! container, no restart. A daemon killed with SIGKILL is replaced by one
//! that re-adopts the same container.
//!
//! The test node's engine is this machine's engine, mounted into the node
//! with the docker CLI; the only way the daemon reaches it for the service is
//! ssh. Skipped with a printed reason when Docker, the sshd image or ssh is
//! missing; a failure under `HARNESS_REQUIRE_SSH=1` or `HARNESS_REQUIRE_DOCKER=1`.

#[path = "../../service-orchestration/tests/remote_support/mod.rs"]
mod remote_support;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness_core::{ServiceKind, ServiceState, ServiceStatus};
use harness_protocol::{Client, ProjectRef, ServicesParams, UpParams};
use remote_support::{Nodes, ProjectCleanup, containers, nodes_available};
use support::{DEADLINE, TestDaemon, project_file, service_status};

const SSH_OPTIONS: [&str; 3] = [
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "LogLevel=ERROR",
];

fn project(dir: &std::path::Path, name: &str, nodes: &Nodes) -> ProjectRef {
    let n1 = &nodes.nodes[0];
    let yaml = format!(
        r#"name: {name}
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
  web:
    image: harness-test/busybox:latest
    host: n1
    command: ["sh", "-c", "echo web up; touch /tmp/ready; exec sleep 1000"]
    health_check:
      command: ["test", "-f", "/tmp/ready"]
      interval: 500ms
      failure_threshold: 1000
    restart: always
  app:
    binary: sh
    args: ["-c", "echo \"app sees web at $$WEB\"; exec sleep 1000"]
    env:
      WEB: "${{web.ip}}"
    dependencies:
      web: {{ condition: healthy }}
"#,
        ip = n1.host,
        key = nodes.key.display()
    );
    project_file(dir, &yaml)
}

async fn status_until(
    c: &Client,
    what: &str,
    d: &TestDaemon,
    cond: impl Fn(&ServiceStatus) -> bool,
) -> (ServiceStatus, Duration) {
    let t0 = Instant::now();
    let deadline = t0 + DEADLINE * 2;
    loop {
        let web = service_status(
            &c.status(ServicesParams::default()).await.expect("status"),
            "web",
        );
        if cond(&web) {
            return (web, t0.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {web:?}; daemon log:\n{}",
            std::fs::read_to_string(d.state.join("harnessd.log")).unwrap_or_default()
        );
        async_io::Timer::after(Duration::from_millis(100)).await;
    }
}

#[test]
fn docker_service_on_a_node_through_a_cut_off_and_a_daemon_kill_9() {
    if !nodes_available() {
        return;
    }
    let Some(nodes) = Nodes::start_with_docker(1) else {
        return;
    };
    let name = remote_support::project_name();
    let _cleanup = ProjectCleanup(name.clone());
    let mut args: Vec<&str> = Vec::new();
    for o in SSH_OPTIONS {
        args.extend(["--ssh-option", o]);
    }
    let mut d = TestDaemon::start_with(&args);
    let p = project(d.dir.path(), &name, &nodes);
    let id = smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;
        hosts.close_all().await;

        let c = Client::connect(&d.state).await.expect("connect");
        let st = c
            .up(UpParams {
                project: p.clone(),
                wait: true,
                timeout_ms: Some(90_000),
                ..UpParams::default()
            })
            .await
            .expect("up");
        let web = service_status(std::slice::from_ref(&st), "web");
        assert_eq!(web.kind, ServiceKind::Docker);
        assert_eq!(web.host, "n1", "the node is the host: {web:?}");
        assert_eq!(web.state, ServiceState::Healthy, "{web:?}");
        let app = service_status(std::slice::from_ref(&st), "app");
        assert!(app.state.is_alive(), "{app:?}");
        // A local process sees the container at its node's address.
        let app_log = d.state.join(format!("logs/{name}/app/stdout.log"));
        let deadline = Instant::now() + DEADLINE;
        let want = format!("app sees web at {}", nodes.nodes[0].host);
        while !std::fs::read_to_string(&app_log).is_ok_and(|t| t.contains(&want)) {
            assert!(
                Instant::now() < deadline,
                "{want:?} not in {}: {:?}",
                app_log.display(),
                std::fs::read_to_string(&app_log)
            );
            async_io::Timer::after(Duration::from_millis(100)).await;
        }
        let id = web.container_id.clone().expect("a container id");
        let on_node = containers(&[
            ("harness.project", &name),
            ("harness.service", "web"),
            ("harness.node", "n1"),
        ]);
        assert_eq!(
            on_node,
            std::slice::from_ref(&id),
            "one container, labelled with its node"
        );

        // Cut the node off: the service cannot be seen, and says why.
        nodes.disconnect("n1");
        let (web, took) = status_until(&c, "never unknown", &d, |s| {
            matches!(s.state, ServiceState::Unknown { .. })
        })
        .await;
        let ServiceState::Unknown { reason } = &web.state else {
            unreachable!()
        };
        assert!(
            reason.contains("`n1`"),
            "the reason names the node: {reason}"
        );
        eprintln!(
            "unknown {:.1}s after the disconnect: {reason}",
            took.as_secs_f64()
        );
        assert_eq!(web.host, "n1");

        // Back on the network: the same container is followed again.
        nodes.connect("n1");
        let (web, took) = status_until(&c, "never healthy again", &d, |s| {
            s.state == ServiceState::Healthy
        })
        .await;
        eprintln!("healthy {:.1}s after the reconnect", took.as_secs_f64());
        assert_eq!(web.container_id.as_deref(), Some(id.as_str()), "{web:?}");
        assert_eq!(web.restarts, 0, "not restarted: {web:?}");
        assert_eq!(
            containers(&[("harness.project", &name), ("harness.service", "web")]),
            std::slice::from_ref(&id),
            "no second container"
        );
        let app = service_status(
            &c.status(ServicesParams::default()).await.expect("status"),
            "app",
        );
        assert_eq!(app.restarts, 0, "{app:?}");
        // The output is in the log file once: not repeated on re-adoption.
        let log = d.state.join(format!("logs/{name}/web/stdout.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(
            text.matches("web up").count(),
            1,
            "{}: {text:?}",
            log.display()
        );

        id
    });

    // A daemon killed with SIGKILL: the next one re-adopts the container on
    // the node by its record, without starting another.
    smol::block_on(async {
        let state_file = harness_protocol::StateDir::new(&d.state).state_file();
        let deadline = Instant::now() + DEADLINE;
        while !std::fs::read_to_string(&state_file).is_ok_and(|t| t.contains(&id)) {
            assert!(Instant::now() < deadline, "state never persisted");
            async_io::Timer::after(Duration::from_millis(100)).await;
        }
    });
    d.signal(rustix::process::Signal::KILL);
    d.wait_exit();
    d.spawn(&args);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.expect("connect");
        let (web, _) = status_until(&c, "not re-adopted", &d, |s| {
            s.state == ServiceState::Healthy
        })
        .await;
        assert_eq!(web.container_id.as_deref(), Some(id.as_str()), "{web:?}");
        assert_eq!(web.host, "n1", "{web:?}");
        assert_eq!(
            containers(&[("harness.project", &name), ("harness.service", "web")]),
            std::slice::from_ref(&id),
            "no second container after the daemon's restart"
        );

        c.down(ServicesParams::default()).await.expect("down");
        assert!(
            containers(&[("harness.project", &name)]).is_empty(),
            "down removed the container"
        );
        let network = Command::new("docker")
            .args(["network", "inspect", &format!("harness-{name}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("docker network inspect");
        assert!(
            !network.success(),
            "down removed the project network from the node's engine"
        );
    });
    remote_support::node_until(
        &nodes.container("n1"),
        30,
        "processes outlived down",
        |ps| ps.is_empty(),
    );
}
