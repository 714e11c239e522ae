//! The manager keeps the service registry: where each service runs, its state,
//! and every `${svc.ip|port|host}` resolved through it from the consumer's side.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use harness_config::{Check, Condition, DockerSpec, Resources, Security, Target};
use harness_core::{ServiceKind, ServiceState};
use service_orchestration::docker::DockerExecutor;
use service_orchestration::{ManagerOptions, ServiceManager};
use service_registry::{Location, Registry, RegistryEvent, StateFile};

const LONG: Duration = Duration::from_secs(60);

#[test]
fn running_services_are_registered_with_their_place_and_state_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry.json");
    let [port] = free_ports::<1>();
    let mut db = sh("db", dir.path(), "exec sleep 600");
    db.readiness = Some(probe(
        Check::Exec {
            command: "true".into(),
            args: vec![],
        },
        3,
    ));
    db.ports = vec![harness_config::PortMapping {
        host: None,
        host_ip: None,
        container: port,
        protocol: harness_config::Protocol::Tcp,
    }];
    let mut api = sh(
        "api",
        dir.path(),
        "echo \"db at ${db.ip}:${db.port} env $DB_IP:$DB_PORT\"; exec sleep 600",
    );
    api.env
        .insert("DB_URL".into(), "tcp://${db.host}:${db.port}".into());
    depends(&mut api, "db", Condition::Healthy);
    let project = project(vec![db, api]);

    smol::block_on(async {
        let (registry, _) = Registry::open(&file).await.unwrap();
        let mut changes = registry.subscribe();
        let mut opts = ManagerOptions::new(smol_spawner());
        opts.registry = Some(registry.clone());
        let m = ServiceManager::new(project.clone(), opts).unwrap();
        let mut events = m.subscribe();
        m.start_all().unwrap();
        m.wait_ready(&[name("api")], LONG).await.unwrap();

        // Where each runs, as the registry has it.
        let db = registry.get("db").expect("db is registered");
        assert_eq!(db.location, Location::LocalHost);
        assert_eq!(db.kind, ServiceKind::Process);
        assert_eq!(db.ports, vec![port]);
        eventually("db healthy in the registry", LONG, || {
            registry.get("db").map(|e| e.state) == Some(ServiceState::Healthy)
        })
        .await;

        // api got db's endpoint, in its command and in its environment.
        let line = first_line_of(&mut events, "api").await;
        assert_eq!(line, format!("db at 127.0.0.1:{port} env 127.0.0.1:{port}"));
        let env = m.placement().environment("api", None).unwrap();
        assert_eq!(env["DB_URL"], format!("tcp://localhost:{port}"));
        assert_eq!(env["HARNESS_SERVICE"], "api");
        assert_eq!(env["DB_PORT"], port.to_string());

        // Every change reached the subscribers, in order: db was registered
        // before api (which depends on it) started.
        let mut order = Vec::new();
        while let Some(ev) = changes.try_recv() {
            if let RegistryEvent::Upserted {
                entry,
                previous: None,
            } = ev
            {
                order.push(entry.name.to_string());
            }
        }
        assert_eq!(order, ["db", "api"]);

        m.stop_all().await;
        eventually("stopped in the registry", LONG, || {
            registry.get("api").map(|e| e.state) == Some(ServiceState::Stopped)
                && registry.get("db").map(|e| e.state) == Some(ServiceState::Stopped)
        })
        .await;
    });
    // What the registry wrote survives it: a new reader finds both, stopped.
    let snapshot: service_registry::RegistrySnapshot = StateFile::new(&file)
        .load()
        .unwrap()
        .0
        .expect("the registry was persisted");
    assert_eq!(snapshot.entries.len(), 2);
    assert!(
        snapshot
            .entries
            .values()
            .all(|e| e.state == ServiceState::Stopped && e.location == Location::LocalHost)
    );
}

/// A container reaching a process of this host gets this host's address on
/// the container's network, not `127.0.0.1` (its own loopback), and reaches it.
#[test]
fn a_container_reaches_a_local_process_at_the_host_bridge_address() {
    smol::block_on(async {
        let Some(_docker) = docker_engine::testing::engine_or_skip("container_to_process").await
        else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.txt"), "from-the-host\n").unwrap();
        let [port] = free_ports::<1>();
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("busybox is installed by the test command");
        let mut web = sh(
            "web",
            dir.path(),
            &format!("exec {busybox} httpd -f -p 0.0.0.0:{port} -h ."),
        );
        web.readiness = Some(probe(Check::Tcp { host: None, port }, 100));
        web.ports = vec![harness_config::PortMapping {
            host: None,
            host_ip: None,
            container: port,
            protocol: harness_config::Protocol::Tcp,
        }];
        let mut client = sh("client", dir.path(), "unused");
        client.target = Target::Docker(DockerSpec {
            image: "harness-test/busybox:latest".into(),
            build: None,
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                "echo \"got $(wget -q -O - http://${web.ip}:${web.port}/data.txt) from ${web.ip} ($WEB_IP)\"; sleep 600"
                    .into(),
            ]),
            entrypoint: None,
            volumes: Vec::new(),
            networks: Vec::new(),
            security: Security::default(),
            resources: Resources::default(),
            host: None,
        });
        depends(&mut client, "web", Condition::Healthy);
        let mut project = (*project(vec![web, client])).clone();
        project.name =
            harness_core::ProjectName::new(docker_engine::testing::unique_name("place")).unwrap();
        let project = Arc::new(project);
        let cleanup = docker_engine::testing::Cleanup::new();
        cleanup.label(format!("harness.project={}", project.name));
        cleanup.network(DockerExecutor::network_name(project.name.as_str()));

        let m = ServiceManager::new(project.clone(), ManagerOptions::new(smol_spawner())).unwrap();
        m.register_executor(
            ServiceKind::Docker,
            Arc::new(DockerExecutor::from_env().await.unwrap()),
        );
        let mut events = m.subscribe();
        m.start_all().unwrap();
        m.wait_ready(&[name("client")], LONG).await.unwrap();
        let line = first_line_of(&mut events, "client").await;
        let client = m.placement().registry().get("client").unwrap();
        let Location::DockerNetwork {
            network,
            container_ip,
            ..
        } = &client.location
        else {
            panic!("the container is registered on its network: {client:?}");
        };
        assert_eq!(
            network,
            &DockerExecutor::network_name(project.name.as_str())
        );
        let host_ip = m
            .placement()
            .topology()
            .host_address_toward(*container_ip)
            .expect("this host has an address on the project network");
        assert!(!host_ip.is_loopback());
        assert_eq!(
            line,
            format!("got from-the-host from {host_ip} ({host_ip})"),
            "the container reached the local process at this host's bridge address"
        );
        m.stop_all().await;
    });
}

/// With a subnet configured for the project's containers, each container gets
/// an address the registry keeps for it: the same after a restart, never the
/// gateway, and what consumers resolve.
#[test]
fn containers_keep_their_address_from_a_configured_subnet() {
    smol::block_on(async {
        let Some(docker) = docker_engine::testing::engine_or_skip("kept_address").await else {
            return;
        };
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
        let subnet = format!("10.{}.{}.0/24", 230 + seed % 20, (seed / 20) % 250);
        let dir = tempfile::tempdir().unwrap();
        let mut db = sh("db", dir.path(), "unused");
        db.target = Target::Docker(DockerSpec {
            image: "harness-test/busybox:latest".into(),
            build: None,
            command: Some(vec!["sleep".into(), "600".into()]),
            entrypoint: None,
            volumes: Vec::new(),
            networks: Vec::new(),
            security: Security::default(),
            resources: Resources::default(),
            host: None,
        });
        db.restart.mode = harness_config::RestartMode::No;
        let mut project = (*project(vec![db])).clone();
        project.name =
            harness_core::ProjectName::new(docker_engine::testing::unique_name("kept")).unwrap();
        project.networks.insert(
            "local".into(),
            harness_config::Network::Local {
                subnet: Some(subnet.clone()),
            },
        );
        let project = Arc::new(project);
        let cleanup = docker_engine::testing::Cleanup::new();
        cleanup.label(format!("harness.project={}", project.name));
        let network = DockerExecutor::network_name(project.name.as_str());
        cleanup.network(network.clone());

        let m = ServiceManager::new(project.clone(), ManagerOptions::new(smol_spawner())).unwrap();
        m.register_executor(
            ServiceKind::Docker,
            Arc::new(DockerExecutor::from_env().await.unwrap()),
        );
        let address_of = |m: &ServiceManager| match m.placement().registry().get("db") {
            Some(service_registry::ServiceEntry {
                location: Location::DockerNetwork { container_ip, .. },
                ..
            }) => Some(container_ip),
            _ => None,
        };
        m.start_all().unwrap();
        m.wait_ready(&[name("db")], LONG).await.unwrap();
        let first = address_of(&m).expect("db is registered on the project network");
        let subnet_net: service_registry::IpNet = subnet.parse().unwrap();
        assert!(subnet_net.contains(first), "{first} in {subnet}");
        assert_ne!(Some(first), subnet_net.nth(1), "never the gateway");
        let kept = m
            .placement()
            .registry()
            .pool(&network)
            .and_then(|p| p.get("db"));
        assert_eq!(kept, Some(first), "the registry keeps it");
        // What the engine gave the container is that address.
        let id = m.status()[0].container_id.clone().unwrap();
        let inspect = docker.inspect_container(&id).await.unwrap();
        assert_eq!(inspect.ip(Some(&network)), Some(first));

        m.restart(&[name("db")]).await.unwrap();
        m.wait_ready(&[name("db")], LONG).await.unwrap();
        let id2 = m.status()[0].container_id.clone().unwrap();
        assert_ne!(id, id2, "a new container");
        let inspect = docker.inspect_container(&id2).await.unwrap();
        assert_eq!(inspect.ip(Some(&network)), Some(first), "the same address");
        m.stop_all().await;
    });
}
