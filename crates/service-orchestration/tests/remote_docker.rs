//! Docker services placed on a node: the Engine API client reaches the node's
//! engine through `ssh NODE docker system dial-stdio`, and the Docker executor
//! runs a container there. (The test node's engine is this machine's engine,
//! mounted into the node together with the docker CLI; the path to it is ssh.)

#[path = "remote_support/mod.rs"]
mod remote_support;

use harness_config::{DockerSpec, Resources, Security, ServiceSpec, Target};
use harness_core::ExitStatus;
use remote_support::*;
use service_orchestration::ServiceExecutor;
use service_orchestration::docker::DockerExecutor;

#[test]
fn docker_on_a_node_through_dial_stdio() {
    if !nodes_available() {
        return;
    }
    let Some(nodes) = Nodes::start_with_docker(1) else {
        return;
    };
    smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;
        let n1 = hosts.get("n1").unwrap();
        let transport = n1.docker_transport();
        let docker_engine::Transport::Command(argv) = &transport else {
            panic!("not a command transport: {transport:?}");
        };
        assert!(argv.ends_with(&[
            "--".to_owned(),
            "docker".into(),
            "system".into(),
            "dial-stdio".into()
        ]));
        let docker = n1.docker().await.expect("engine through dial-stdio");
        docker.ping().await.unwrap();
        docker
            .inspect_image("harness-test/busybox:latest")
            .await
            .expect("the node's engine has the test image");

        let project = project_name();
        let exec = DockerExecutor::new(docker);
        let mut spec = ServiceSpec::process(name("hello"), "unused", vec![]);
        spec.target = Target::Docker(DockerSpec {
            image: "harness-test/busybox:latest".into(),
            build: None,
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                "echo from the node engine".into(),
            ]),
            entrypoint: None,
            volumes: Vec::new(),
            networks: Vec::new(),
            security: Security::default(),
            resources: Resources::default(),
            host: None,
        });
        let ctx = ctx(&project, smol_spawner());
        let result = async {
            let mut l = exec.start(&spec, &ctx).await?;
            let (lines, exit) = read_until(&mut l.events, 60, |_| false).await;
            Ok::<_, service_orchestration::ExecutorError>((lines, exit))
        }
        .await;
        let _ = exec.remove_project(&project).await;
        let (lines, exit) = result.unwrap();
        assert_eq!(exit, Some(ExitStatus::Code(0)), "{lines:?}");
        assert_eq!(lines, ["from the node engine"]);
        hosts.close_all().await;
    });
}
