//! A remote service and a package service through the real daemon: a node
//! is a real `sshd` (the `harness-test/sshd` container), reached with a key
//! made for the test. `up` deploys the package and runs both on the node,
//! status shows the node as their host and the package's version, their
//! output is in `logs`, a daemon killed with SIGKILL is replaced by one that
//! re-adopts the same remote process, and `down` stops it.
//!
//! Skipped with a printed reason when Docker, the image or ssh is missing; a
//! failure under `HARNESS_REQUIRE_SSH=1` or `HARNESS_REQUIRE_DOCKER=1`.

#[path = "../../service-orchestration/tests/remote_support/mod.rs"]
mod remote_support;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use harness_core::{ServiceKind, ServiceName, ServiceStatus};
use harness_protocol::{
    Client, LogsParams, ProjectRef, ProjectStatus, ServicesParams, StreamItem, UpParams,
};
use remote_support::{NodeProcess, Nodes, helpers, node_until, nodes_available, tails};
use support::*;

const SSH_OPTIONS: [&str; 3] = [
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "LogLevel=ERROR",
];

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The daemon's arguments: ssh options for the test nodes.
fn daemon_args() -> Vec<&'static str> {
    SSH_OPTIONS
        .iter()
        .flat_map(|o| ["--ssh-option", *o])
        .collect()
}

/// Waits until process `pid` no longer runs on node `n1`.
fn wait_gone_from_node(nodes: &Nodes, pid: u32) {
    let deadline = Instant::now() + DEADLINE;
    while succeeds(&mut nodes.ssh("n1", &format!("kill -0 {pid}"))) {
        assert!(
            Instant::now() < deadline,
            "the remote process outlived down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn project(dir: &Path, nodes: &Nodes) -> ProjectRef {
    let yaml = format!(
        r#"name: rmt
networks:
  lab:
    type: lan
    subnet: {ip}/32
    nodes:
      - host: {ip}
        name: n1
        ssh_user: root
        ssh_key: {key}
        package_deploy: true
services:
  agent:
    type: package
    network: lab
    host: n1
    package: ./pkg
    version: "1.0"
  ticker:
    type: remote
    network: lab
    host: n1
    binary: sh
    args: ["-c", "echo remote hello; exec sleep 300"]
"#,
        ip = nodes.nodes[0].host,
        key = nodes.key.display()
    );
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).expect("package dir");
    let run = pkg.join("run");
    std::fs::write(&run, "#!/bin/sh\necho agent running\nexec sleep 300\n").expect("run script");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    project_file(dir, &yaml)
}

fn ticker(st: &[harness_protocol::ProjectStatus]) -> ServiceStatus {
    service_status(st, "ticker")
}

async fn log_lines(c: &Client) -> Vec<String> {
    log_lines_of(c, "ticker").await
}

/// Waits until `service`'s output in `logs` has a line containing `text`.
async fn wait_output(c: &Client, d: &TestDaemon, service: &str, text: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !log_lines_of(c, service)
        .await
        .iter()
        .any(|l| l.contains(text))
    {
        assert!(
            Instant::now() < deadline,
            "no {text:?} from {service} in logs; daemon log:\n{}\nlog files: {:?}",
            std::fs::read_to_string(d.state.join("harnessd.log")).unwrap_or_default(),
            std::fs::read_dir(d.state.join(format!("logs/rmt/{service}"))).map(|r| r
                .filter_map(|e| e.ok())
                .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect::<Vec<_>>())
        );
        async_io::Timer::after(Duration::from_millis(100)).await;
    }
}

async fn log_lines_of(c: &Client, service: &str) -> Vec<String> {
    let mut s = c
        .logs(LogsParams {
            services: vec![ServiceName::new(service).unwrap()],
            ..LogsParams::default()
        })
        .expect("logs");
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        if let Ok(StreamItem::Log(l)) = item {
            out.push(l.line);
        }
    }
    out
}

#[test]
fn remote_service_through_the_daemon_survives_kill_9() {
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(1);
    nodes.wait_answering();
    let args = daemon_args();
    let mut d = TestDaemon::start_with(&args);
    let p = project(d.dir.path(), &nodes);

    let st = up_and_followed(&d, &p);
    let pids = pids_of(&st);
    let before = ticker(std::slice::from_ref(&st));
    assert_eq!(before.kind, ServiceKind::Remote);
    assert_eq!(before.host, "n1", "the node is the host: {before:?}");
    assert!(before.state.is_alive(), "{before:?}");
    let a = service_status(std::slice::from_ref(&st), "agent");
    assert_eq!(a.kind, ServiceKind::Package);
    assert_eq!(a.host, "n1", "{a:?}");
    assert_eq!(
        a.version.as_deref(),
        Some("1.0"),
        "the deployed version: {a:?}"
    );
    let pid = before.pid.expect("the remote pid");

    // Let the state be persisted with the output delivered so far (the
    // daemon persists every half second: what was delivered after the last
    // write comes again after a kill -9), then kill -9 the daemon: the
    // service stays.
    smol::block_on(async {
        let deadline = Instant::now() + DEADLINE;
        let state_file = StateDirOf(&d.state).file();
        while persisted_stdout_offset(&state_file, "ticker") < "remote hello\n".len() as u64 {
            assert!(Instant::now() < deadline, "state never persisted");
            async_io::Timer::after(Duration::from_millis(100)).await;
        }
    });
    d.signal(rustix::process::Signal::KILL);
    d.wait_exit();
    assert!(
        succeeds(&mut nodes.ssh("n1", &format!("kill -0 {pid}"))),
        "the remote process died with the daemon"
    );
    d.spawn(&args);
    wait_re_adopted(&d, pids);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.expect("connect");
        let st = c.status(ServicesParams::default()).await.expect("status");
        let t = ticker(&st);
        assert_eq!(t.host, "n1");
        let a = service_status(&st, "agent");
        assert_eq!(a.version.as_deref(), Some("1.0"), "{a:?}");
        let lines = log_lines(&c).await;
        assert_eq!(
            lines.iter().filter(|l| l.contains("remote hello")).count(),
            1,
            "the output once, not repeated: {lines:?}"
        );
        c.down(ServicesParams::default()).await.expect("down");
    });
    wait_gone_from_node(&nodes, pid);
}

/// A daemon that lost its state (killed with SIGKILL, `state.json` and its
/// last-good copy gone) finds a remote service on its node, from the
/// service's directory there: status shows the same process, `up` starts no
/// second one and `down` stops it, instead of leaving it running unknown.
#[test]
fn a_remote_service_is_found_on_its_node_when_the_state_is_lost() {
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(1);
    nodes.wait_answering();
    let args = daemon_args();
    let mut d = TestDaemon::start_with(&args);
    let p = project(d.dir.path(), &nodes);
    let up = UpParams {
        project: p.clone(),
        services: vec![ServiceName::new("ticker").unwrap()],
        wait: true,
        timeout_ms: Some(60_000),
    };
    let pid = smol::block_on(async {
        let c = Client::connect(&d.state).await.expect("connect");
        let st = c.up(up.clone()).await.expect("up");
        ticker(std::slice::from_ref(&st))
            .pid
            .expect("the remote pid")
    });
    d.signal(rustix::process::Signal::KILL);
    d.wait_exit();
    let sd = harness_protocol::StateDir::new(&d.state);
    for f in [sd.state_file(), sd.last_good_state_file()] {
        std::fs::remove_file(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    d.spawn(&args);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.expect("connect");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let t = ticker(&c.status(ServicesParams::default()).await.expect("status"));
            if t.state.is_alive() {
                assert_eq!(t.pid, Some(pid), "the same process: {t:?}");
                break;
            }
            assert!(Instant::now() < deadline, "not found on the node: {t:?}");
            async_io::Timer::after(Duration::from_millis(100)).await;
        }
        let st = c.up(up).await.expect("up again");
        assert_eq!(
            ticker(std::slice::from_ref(&st)).pid,
            Some(pid),
            "no second one"
        );
        c.down(ServicesParams::default()).await.expect("down");
    });
    wait_gone_from_node(&nodes, pid);
}

/// Brings the project up and waits until both services' first line is in `logs`.
fn up_and_followed(d: &TestDaemon, p: &ProjectRef) -> ProjectStatus {
    smol::block_on(async {
        let c = Client::connect(&d.state).await.expect("connect");
        let st = c
            .up(UpParams {
                project: p.clone(),
                wait: true,
                timeout_ms: Some(60_000),
                ..UpParams::default()
            })
            .await
            .expect("up");
        wait_output(&c, d, "agent", "agent running").await;
        wait_output(&c, d, "ticker", "remote hello").await;
        st
    })
}

/// The pids of `ticker` and `agent` on the node.
fn pids_of(st: &ProjectStatus) -> [u32; 2] {
    let st = std::slice::from_ref(st);
    ["ticker", "agent"].map(|s| service_status(st, s).pid.expect("a pid on the node"))
}

/// Waits until the daemon runs both services with these pids (re-adopted).
fn wait_re_adopted(d: &TestDaemon, pids: [u32; 2]) {
    smol::block_on(async {
        let c = Client::connect(&d.state).await.expect("connect");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let st = c.status(ServicesParams::default()).await.expect("status");
            let now = ["ticker", "agent"].map(|s| service_status(&st, s));
            if now.iter().all(|s| s.state.is_alive()) {
                assert_eq!(
                    now.map(|s| s.pid),
                    pids.map(Some),
                    "re-adopted, not restarted"
                );
                return;
            }
            assert!(Instant::now() < deadline, "not re-adopted: {now:?}");
            async_io::Timer::after(Duration::from_millis(100)).await;
        }
    })
}

/// The project up on a node through a daemon, both services followed.
struct Followed {
    d: TestDaemon,
    /// The node's container.
    node: String,
    /// The services' pids on the node.
    pids: [u32; 2],
    /// The node's processes then: the services and a tail per log.
    procs: Vec<NodeProcess>,
    _nodes: Nodes,
}

fn followed() -> Followed {
    let nodes = Nodes::start(1);
    nodes.wait_answering();
    let node = nodes.container("n1");
    let d = TestDaemon::start_with(&daemon_args());
    let p = project(d.dir.path(), &nodes);
    let pids = pids_of(&up_and_followed(&d, &p));
    let procs = node_until(&node, 30, "not a tail per log of each service", |ps| {
        tails(ps).len() == 4
    });
    Followed {
        d,
        node,
        pids,
        procs,
        _nodes: nodes,
    }
}

#[test]
fn followers_do_not_outlive_a_re_attach_or_down() {
    if !nodes_available() {
        return;
    }
    let mut f = followed();
    let before: Vec<u32> = helpers(&f.procs, &f.pids).iter().map(|p| p.pid).collect();

    // A daemon restart: the new daemon re-adopts both services and follows
    // them, and what the old one followed them with ends.
    f.d.signal(rustix::process::Signal::TERM);
    f.d.wait_exit();
    f.d.spawn(&daemon_args());
    wait_re_adopted(&f.d, f.pids);
    node_until(
        &f.node,
        30,
        "the old daemon's followers outlived the re-attach",
        |ps| tails(ps).len() == 4 && !ps.iter().any(|p| before.contains(&p.pid)),
    );

    // `down` leaves nothing of the project running on the node.
    smol::block_on(async {
        let c = Client::connect(&f.d.state).await.expect("connect");
        c.down(ServicesParams::default()).await.expect("down");
    });
    node_until(&f.node, 30, "processes outlived down", |ps| ps.is_empty());
}

#[test]
fn a_daemon_killed_with_9_leaves_no_follower_on_the_node() {
    if !nodes_available() {
        return;
    }
    let mut f = followed();

    // Nobody holds the followers any more: they end, the services stay.
    f.d.signal(rustix::process::Signal::KILL);
    f.d.wait_exit();
    let left = node_until(&f.node, 30, "followers outlived their daemon", |ps| {
        helpers(ps, &f.pids).is_empty()
    });
    for pid in f.pids {
        assert!(
            left.iter().any(|p| p.pid == pid),
            "service {pid} died with the daemon: {left:#?}"
        );
    }
}

/// The state file of a daemon state directory.
struct StateDirOf<'a>(&'a Path);

impl StateDirOf<'_> {
    fn file(&self) -> std::path::PathBuf {
        harness_protocol::StateDir::new(self.0).state_file()
    }
}

/// The stdout offset of `service`'s record in the daemon's state file (0 if none yet).
fn persisted_stdout_offset(state_file: &std::path::Path, service: &str) -> u64 {
    fn find(v: &serde_json::Value, service: &str) -> Option<u64> {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("service").and_then(|s| s.as_str()) == Some(service) {
                    return m
                        .get("instance")?
                        .get("data")?
                        .get("offsets")?
                        .get("stdout")?
                        .as_u64();
                }
                m.values().find_map(|v| find(v, service))
            }
            serde_json::Value::Array(a) => a.iter().find_map(|v| find(v, service)),
            _ => None,
        }
    }
    std::fs::read_to_string(state_file)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| find(&v, service))
        .unwrap_or(0)
}
