//! Projects with services of every kind on a daemon whose Docker engine and
//! nodes are unreachable: what can run, runs; what cannot fails with an error
//! that says why, naming the service.

mod support;

use harness_core::{ServiceKind, ServiceName};
use harness_protocol::{Client, ProjectRef, ServicesParams, UpParams};
use support::*;

/// A DOCKER_HOST where no engine listens.
fn no_engine(dir: &std::path::Path) -> String {
    format!("unix://{}", dir.join("no-engine.sock").display())
}

fn project(dir: &std::path::Path, name: &str, yaml: &str) -> ProjectRef {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, format!("name: {name}\n{yaml}")).expect("write project");
    ProjectRef {
        files: vec![file],
        working_dir: Some(dir.to_owned()),
        ..ProjectRef::default()
    }
}

fn name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid name")
}

#[test]
fn without_an_engine_processes_run_and_docker_services_fail_naming_the_engine() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let host = no_engine(scratch.path());
    let d = TestDaemon::start_with_env(&[], &[("DOCKER_HOST", host.as_str())]);
    let mut guard = Pids(Vec::new());

    // A project with no docker service never needs the engine.
    let plain = project(
        d.dir.path(),
        "plain",
        "services:\n  web:\n    type: process\n    binary: sleep\n    args: [\"300\"]\n",
    );
    // A mixed project: its process runs, its container cannot.
    let mixed = project(
        d.dir.path(),
        "mixed",
        "services:\n  api:\n    type: process\n    binary: sleep\n    args: [\"300\"]\n  db:\n    type: docker\n    image: harness-test/busybox:latest\n    restart: no\n",
    );
    smol::block_on(async {
        let c = Client::connect(&d.state).await.expect("connect");
        let st = c
            .up(UpParams {
                project: plain,
                wait: true,
                timeout_ms: Some(30_000),
                ..UpParams::default()
            })
            .await
            .expect("a project without docker services comes up");
        guard.0.extend(st.services.iter().filter_map(|s| s.pid));
        assert!(st.services[0].state.is_alive(), "{:?}", st.services);

        let st = c
            .up(UpParams {
                project: mixed.clone(),
                services: vec![name("api")],
                wait: true,
                timeout_ms: Some(30_000),
            })
            .await
            .expect("the process of a project with docker services comes up");
        guard.0.extend(st.services.iter().filter_map(|s| s.pid));
        let api = st.services.iter().find(|s| s.name == name("api")).unwrap();
        assert!(api.state.is_alive(), "{api:?}");

        let e = c
            .up(UpParams {
                project: mixed.clone(),
                services: vec![name("db")],
                wait: true,
                timeout_ms: Some(30_000),
            })
            .await
            .expect_err("a docker service cannot start without an engine");
        let text = e.to_string();
        assert!(text.contains("db"), "names the service: {text}");
        assert!(
            text.contains("Docker engine is unreachable"),
            "says why: {text}"
        );

        // Status still shows both, with their kinds.
        let st = c
            .status(ServicesParams {
                project: ProjectRef {
                    name: Some(harness_core::ProjectName::new("mixed").unwrap()),
                    ..ProjectRef::default()
                },
                ..ServicesParams::default()
            })
            .await
            .expect("status");
        let db = st[0]
            .services
            .iter()
            .find(|s| s.name == name("db"))
            .unwrap();
        assert_eq!(db.kind, ServiceKind::Docker);
        assert!(!db.state.is_alive(), "{db:?}");
        let api = st[0]
            .services
            .iter()
            .find(|s| s.name == name("api"))
            .unwrap();
        assert!(api.state.is_alive(), "{api:?}");
    });
}
