//! A stack across machines under the ServiceManager: a local process, a
//! local container and services on two nodes, with dependencies across them
//! and `${svc.ip}` resolving to the right address from each consumer.

#[path = "remote_support/mod.rs"]
mod remote_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use harness_config::{
    Check, Condition, Dependency, DockerSpec, Network, Probe, Project, Resources, RestartMode,
    Security, ServiceSpec, Settings, Target,
};
use harness_core::{ProjectName, ServiceKind, ServiceName};
use remote_support::*;
use service_orchestration::docker::DockerExecutor;
use service_orchestration::remote::RemoteExecutor;
use service_orchestration::{ManagerEvent, ManagerOptions, ServiceManager};

fn depends(spec: &mut ServiceSpec, on: &str, condition: Condition) {
    spec.dependencies.push(Dependency {
        service: name(on),
        condition,
    });
}

fn tcp_ready(port: u16) -> Probe {
    let mut p = Probe::new(Check::Tcp { host: None, port });
    p.period = Duration::from_millis(200);
    p.timeout = Duration::from_secs(3);
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn stack_across_local_process_container_and_two_nodes() {
    if !nodes_available() {
        return;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(busybox) = busybox else {
        eprintln!("skipping: busybox (for a local HTTP server) is not installed");
        return;
    };
    let nodes = Nodes::start(2);
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("data.txt"), "db-data\n").unwrap();
    let db_port = free_port();
    smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;

        // db: a local process serving HTTP on all interfaces.
        let mut db = ServiceSpec::process(
            name("db"),
            busybox,
            vec![
                "httpd".into(),
                "-f".into(),
                "-p".into(),
                db_port.to_string(),
                "-h".into(),
                www.path().to_string_lossy().into_owned(),
            ],
        );
        db.readiness = Some(tcp_ready(db_port));
        // api on n1: fetches from db, then serves what it got; probed from here.
        let mut api = remote_sh(
            "api",
            "n1",
            "mkdir -p www && wget -q -O www/data.txt http://${db.ip}:${db.port}/data.txt \
             && echo \"api got $(cat www/data.txt) from ${db.ip}\" && exec httpd -f -p 8080 -h www",
        );
        api.readiness = Some(tcp_ready(8080));
        depends(&mut api, "db", Condition::Healthy);
        // worker on n2: reads from api on the other node.
        let mut worker = remote_sh(
            "worker",
            "n2",
            "echo \"worker got $(wget -q -O - http://${api.ip}:${api.port}/data.txt) via ${api.ip}\"; \
             while true; do sleep 1; done",
        );
        depends(&mut worker, "api", Condition::Healthy);
        // sidecar on n1 sees api on its own node at loopback.
        let mut sidecar = remote_sh(
            "sidecar",
            "n1",
            "echo \"sidecar got $(wget -q -O - http://${api.ip}:${api.port}/data.txt) via ${api.ip}\"; \
             while true; do sleep 1; done",
        );
        depends(&mut sidecar, "api", Condition::Healthy);
        // web: a local container that sees api at n1's address.
        let mut web = ServiceSpec::process(name("web"), "unused", vec![]);
        web.target = Target::Docker(DockerSpec {
            image: "harness-test/busybox:latest".into(),
            build: None,
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                "echo \"web sees api at ${api.ip}:${api.port}\"; sleep 1000".into(),
            ]),
            entrypoint: None,
            volumes: Vec::new(),
            networks: Vec::new(),
            security: Security::default(),
            resources: Resources::default(),
            host: None,
        });
        depends(&mut web, "worker", Condition::Started);
        for s in [&mut db, &mut api, &mut worker, &mut sidecar, &mut web] {
            s.restart.mode = RestartMode::No;
            s.shutdown.timeout = Duration::from_secs(5);
        }
        api.ports = vec![harness_config::PortMapping {
            host: None,
            host_ip: None,
            container: 8080,
            protocol: harness_config::Protocol::Tcp,
        }];
        let project_name = project_name();
        let mut networks = BTreeMap::new();
        networks.insert(
            "lan".to_owned(),
            Network::Lan {
                subnet: "10.0.0.0/8".into(),
                nodes: nodes.nodes.clone(),
            },
        );
        let services: BTreeMap<ServiceName, ServiceSpec> = [db, api, worker, sidecar, web]
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let project = Arc::new(
            Project::new(
                ProjectName::new(&project_name).unwrap(),
                Settings::default(),
                networks,
                services,
            )
            .unwrap(),
        );

        let docker = DockerExecutor::from_env().await.unwrap();
        let opts = ManagerOptions::new(smol_spawner());
        let manager = ServiceManager::new(project.clone(), opts).unwrap();
        manager.register_executor(ServiceKind::Docker, Arc::new(docker.clone()));
        manager.register_executor(
            ServiceKind::Remote,
            Arc::new(RemoteExecutor::new(hosts.clone())),
        );
        let mut events = manager.subscribe();
        manager.start_all().unwrap();
        let all: Vec<ServiceName> = project.services.keys().cloned().collect();
        let ready = manager.wait_ready(&all, Duration::from_secs(90)).await;

        // Collect the lines that tell where each consumer found its dependency.
        let mut said: BTreeMap<String, String> = BTreeMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while said.len() < 4 && std::time::Instant::now() < deadline {
            let next = async { events.next().await };
            let timer = async {
                async_io::Timer::after(Duration::from_secs(1)).await;
                None
            };
            if let Some(ManagerEvent::Output { service, line, .. }) =
                futures_lite::future::or(next, timer).await
            {
                said.insert(service.to_string(), line.text().into_owned());
            }
        }
        let from_n1 = hosts
            .get("n1")
            .unwrap()
            .local_address(Duration::from_secs(20))
            .await
            .unwrap();
        manager.stop_all().await;
        let _ = docker.remove_project(&project_name).await;
        hosts.close_all().await;
        ready.unwrap();

        let n1 = &nodes.nodes[0].host;
        let api_line = &said["api"];
        assert!(api_line.starts_with("api got db-data from "), "{said:?}");
        assert_eq!(
            api_line,
            &format!("api got db-data from {from_n1}"),
            "api on n1 reaches db at this machine's address as n1 sees it"
        );
        assert_eq!(
            said["worker"],
            format!("worker got db-data via {n1}"),
            "{said:?}"
        );
        assert_eq!(
            said["sidecar"], "sidecar got db-data via 127.0.0.1",
            "{said:?}"
        );
        assert_eq!(
            said["web"],
            format!("web sees api at {n1}:8080"),
            "{said:?}"
        );
    });
}
