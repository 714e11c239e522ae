//! The remote and package executors under tokio (the library has no runtime
//! of its own): a remote service's output and exit, stop, and a package deploy.

#[path = "remote_support/mod.rs"]
mod remote_support;

use std::sync::Arc;
use std::time::Duration;

use harness_config::{ServiceSpec, Target};
use harness_core::{BoxTask, ExitStatus, SharedSpawner, Signal};
use remote_support::*;
use service_orchestration::ServiceExecutor;
use service_orchestration::package::{DeployMode, deploy};
use service_orchestration::remote::RemoteExecutor;

fn tokio_spawner() -> SharedSpawner {
    let handle = tokio::runtime::Handle::current();
    Arc::new(move |t: BoxTask| {
        handle.spawn(t);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_service_and_package_under_tokio() {
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(1);
    let hosts = nodes.hosts(nodes.options());
    nodes.wait_ready(&hosts).await;
    let project = project_name();
    let ctx = ctx(&project, tokio_spawner());
    let exec = RemoteExecutor::new(hosts.clone());

    let spec = remote_sh("job", "n1", "echo one; echo two; exit 7");
    let mut l = exec.start(&spec, &ctx).await.unwrap();
    let (lines, exit) = read_until(&mut l.events, 30, |_| false).await;
    assert_eq!(lines, ["one", "two"]);
    assert_eq!(exit, Some(ExitStatus::Code(7)));

    let spec = remote_sh("server", "n1", "echo up; while true; do sleep 1; done");
    let mut l = exec.start(&spec, &ctx).await.unwrap();
    let (lines, _) = read_until(&mut l.events, 30, |ls| !ls.is_empty()).await;
    assert_eq!(lines, ["up"]);
    l.instance
        .stop(Signal::TERM, Duration::from_secs(5))
        .await
        .unwrap();
    let (_, exit) = read_until(&mut l.events, 30, |_| false).await;
    assert_eq!(exit, Some(ExitStatus::Signal(15)));

    let work = tempfile::tempdir().unwrap();
    write_exec(&work.path().join("run"), "#!/bin/sh\necho packaged\n");
    let mut pkg = ServiceSpec::process(name("pkg"), "unused", vec![]);
    pkg.target = Target::Package {
        host: "n1".into(),
        package: work.path().to_string_lossy().into_owned(),
        version: Some("1".into()),
        install_path: Some(format!("/srv/{project}").into()),
    };
    let d = deploy(&hosts, &project, &pkg, DeployMode::Always, None)
        .await
        .unwrap();
    assert!(d.changed && d.uploaded);
    let out = hosts
        .get("n1")
        .unwrap()
        .run(
            &format!("/srv/{project}/current/run"),
            None,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "packaged");
    hosts.close_all().await;
}

/// The manager under tokio: a cut-off node's service shows `unknown`, is not
/// restarted, comes back as it was, and is restarted per its policy if it died
/// while its node was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_shows_an_unreachable_node_as_unknown_under_tokio() {
    if !nodes_available() {
        return;
    }
    unreachable_node_through_manager(tokio_spawner()).await;
}
