//! `DockerPlacement`: a docker service with `host:` runs on its node's engine
//! (through `ssh NODE docker system dial-stdio`), a new executor re-adopts it
//! by the host in its record, and a container that dies while its node is cut
//! off is reported as unreachable, then reachable and exited once the node is
//! back; a new executor that re-adopts it while its node is cut off sees it
//! as unreachable until the node is back. (The test node's engine is this machine's engine, mounted into the
//! node with the docker CLI; the path to it is ssh.)

#[path = "remote_support/mod.rs"]
mod remote_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use harness_config::{DockerSpec, Resources, Security, ServiceSpec, Target};
use harness_core::{ExitStatus, ServiceKind};
use remote_support::*;
use service_orchestration::docker::LABEL_NODE;
use service_orchestration::docker_hosts::DockerPlacement;
use service_orchestration::{
    ExecutorError, InstanceEvent, InstanceEvents, InstanceRecord, ServiceExecutor,
};

fn on_node(svc: &str, host: Option<&str>) -> ServiceSpec {
    let mut spec = ServiceSpec::process(name(svc), "unused", vec![]);
    spec.target = Target::Docker(DockerSpec {
        image: "harness-test/busybox:latest".into(),
        build: None,
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo on the node; exec sleep 1000".into(),
        ]),
        entrypoint: None,
        volumes: Vec::new(),
        networks: Vec::new(),
        security: Security::default(),
        resources: Resources::default(),
        host: host.map(str::to_owned),
    });
    spec
}

/// The next event other than output and the start, within `secs`.
async fn next_state_event(events: &mut InstanceEvents, secs: u64) -> Option<InstanceEvent> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let next = async { events.next().await.map(Some) };
        let timer = async {
            async_io::Timer::at(deadline).await;
            None
        };
        match futures_lite::future::or(next, timer).await {
            None | Some(None) => return None,
            Some(Some(
                InstanceEvent::Output(_)
                | InstanceEvent::Dropped { .. }
                | InstanceEvent::Started { .. },
            )) => {}
            Some(Some(ev)) => return Some(ev),
        }
    }
}

fn docker_quiet(args: &[&str]) {
    let _ = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[test]
fn a_container_on_a_node_is_placed_readopted_and_seen_through_an_outage() {
    if !nodes_available() {
        return;
    }
    let Some(nodes) = Nodes::start_with_docker(1) else {
        return;
    };
    let project = project_name();
    let _cleanup = ProjectCleanup(project.clone());
    smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;
        let ctx = ctx(&project, smol_spawner());
        let exec = DockerPlacement::new().with_nodes(hosts.clone());
        let result = async {
            // Without a local engine, a service without a host cannot run.
            let err = exec.start(&on_node("here", None), &ctx).await.err();
            assert!(
                matches!(&err, Some(ExecutorError::Start { source, .. }) if source.to_string().contains("this machine")),
                "{err:?}"
            );

            let spec = on_node("web", Some("n1"));
            let mut first = exec.start(&spec, &ctx).await?;
            let (lines, exit) = read_until(&mut first.events, 60, |l| !l.is_empty()).await;
            assert_eq!((lines.as_slice(), exit), (&["on the node".to_owned()][..], None));
            let record = first.instance.record();
            assert_eq!(record.kind, ServiceKind::Docker);
            assert_eq!(record.host, "n1", "{record:?}");
            let id = record.container_id.clone().expect("a container id");
            let engine = hosts.get("n1").unwrap().docker().await.unwrap();
            let i = engine.inspect_container(&id).await.unwrap();
            assert_eq!(i.label(LABEL_NODE), Some("n1"));

            // A new executor (a new daemon) re-adopts it by the record's host,
            // and refuses when the service has moved.
            let again = DockerPlacement::new().with_nodes(hosts.clone());
            let moved = on_node("web", None);
            let err = again.attach(&moved, &record, &ctx).await.err();
            assert!(
                matches!(&err, Some(ExecutorError::Attach { source, .. }) if source.to_string().contains("now placed on this machine")),
                "{err:?}"
            );
            let mut second = again.attach(&spec, &record, &ctx).await?;
            assert_eq!(second.instance.record().container_id.as_deref(), Some(id.as_str()));
            drop(first);

            // Cut off: unreachable, naming the node, not exited.
            nodes.disconnect("n1");
            let ev = next_state_event(&mut second.events, 90).await;
            let Some(InstanceEvent::Unreachable { reason }) = &ev else {
                panic!("expected unreachable, got {ev:?}");
            };
            assert!(reason.contains("`n1`"), "{reason}");
            let why = second.instance.unreachable().await;
            assert!(why.as_deref().is_some_and(|w| w.contains("`n1`")), "{why:?}");
            // It dies while nobody can see it; the node comes back.
            docker_quiet(&["kill", &id]);
            nodes.connect("n1");
            let ev = next_state_event(&mut second.events, 90).await;
            assert_eq!(ev, Some(InstanceEvent::Reachable));
            let ev = next_state_event(&mut second.events, 90).await;
            assert_eq!(ev, Some(InstanceEvent::Exited(ExitStatus::Code(137))));

            // A new daemon comes up while the node is cut off: the container
            // is adopted as unreachable, and followed once the node is back.
            let third = exec.start(&spec, &ctx).await?;
            let record = third.instance.record();
            let id = record.container_id.clone().expect("a container id");
            drop(third);
            nodes.disconnect("n1");
            let later = DockerPlacement::new().with_nodes(nodes.hosts(nodes.options()));
            let mut adopted = later.attach(&spec, &record, &ctx).await?;
            let ev = next_state_event(&mut adopted.events, 90).await;
            let Some(InstanceEvent::Unreachable { reason }) = &ev else {
                panic!("expected unreachable, got {ev:?}");
            };
            assert!(reason.contains("`n1`"), "{reason}");
            assert_eq!(adopted.instance.record().container_id.as_deref(), Some(id.as_str()));
            nodes.connect("n1");
            let ev = next_state_event(&mut adopted.events, 90).await;
            assert_eq!(ev, Some(InstanceEvent::Reachable));
            assert!(adopted.instance.unreachable().await.is_none());
            adopted
                .instance
                .stop(harness_core::Signal::TERM, Duration::from_secs(5))
                .await?;
            let ev = next_state_event(&mut adopted.events, 90).await;
            assert!(matches!(ev, Some(InstanceEvent::Exited(_))), "{ev:?}");
            Ok::<_, ExecutorError>(())
        }
        .await;
        hosts.close_all().await;
        result.unwrap();
    });
}

/// A record of a container on this machine's engine is not routed to a node.
#[test]
fn a_record_of_this_machine_needs_the_local_engine() {
    smol::block_on(async {
        let ctx = ctx(&project_name(), smol_spawner());
        let record = InstanceRecord {
            kind: ServiceKind::Docker,
            pid: None,
            container_id: Some("0123".into()),
            host: "local".into(),
            data: serde_json::Value::Null,
        };
        let err = DockerPlacement::new()
            .with_local_unavailable("the Docker engine is unreachable: test")
            .attach(&on_node("web", None), &record, &ctx)
            .await
            .err();
        assert!(
            matches!(&err, Some(ExecutorError::Attach { source, .. }) if source.to_string().contains("engine is unreachable: test")),
            "{err:?}"
        );
        let err = DockerPlacement::new()
            .attach(&on_node("web", Some("n1")), &record, &ctx)
            .await
            .err();
        assert!(
            matches!(&err, Some(ExecutorError::Attach { source, .. }) if source.to_string().contains("node `n1`")),
            "{err:?}"
        );
    });
}
