//! Package services on a real sshd node: deploy, same-version no-op, upgrade,
//! rollback, a .tar.gz package, and running the deployed version.

#[path = "remote_support/mod.rs"]
mod remote_support;

use std::path::Path;
use std::time::Duration;

use harness_config::{ServiceSpec, Target};
use harness_core::{ExitStatus, Signal};
use remote_support::*;
use service_orchestration::ServiceExecutor;
use service_orchestration::package::{
    DeployMode, PackageError, PackageExecutor, deploy, deployed, rollback,
};

fn package_dir(root: &Path, name: &str, version_text: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("share")).unwrap();
    std::fs::write(dir.join("share/version.txt"), version_text).unwrap();
    write_exec(
        &dir.join("run"),
        "#!/bin/sh\necho \"running $(cat share/version.txt) in $(pwd)\"\nwhile true; do sleep 1; done\n",
    );
    dir
}

fn package_spec(svc: &str, host: &str, package: &Path, version: Option<&str>) -> ServiceSpec {
    let mut s = ServiceSpec::process(name(svc), "unused", vec![]);
    s.target = Target::Package {
        host: host.into(),
        package: package.to_string_lossy().into_owned(),
        version: version.map(str::to_owned),
        install_path: None,
    };
    s
}

#[test]
fn package_deploy_upgrade_no_op_and_rollback() {
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(1);
    let work = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;
        let project = project_name();
        let v1 = package_dir(work.path(), "v1", "one");
        let v2 = package_dir(work.path(), "v2", "two");
        let s1 = package_spec("app", "n1", &v1, Some("1.0"));
        let s2 = package_spec("app", "n1", &v2, Some("2.0"));

        // First deploy uploads and switches.
        let d = deploy(&hosts, &project, &s1, DeployMode::Always, None)
            .await
            .unwrap();
        assert_eq!(d.version, "1.0");
        assert!(d.changed && d.uploaded);
        assert_eq!(d.previous, None);

        // The same version again is a no-op.
        let d = deploy(&hosts, &project, &s1, DeployMode::Always, None)
            .await
            .unwrap();
        assert!(!d.changed && !d.uploaded, "{d:?}");
        assert_eq!(d.version, "1.0");

        // Running it runs the deployed version, and says which.
        let exec = PackageExecutor::new(hosts.clone());
        let ctx = ctx(&project, smol_spawner());
        let mut l = exec.start(&s1, &ctx).await.unwrap();
        let (lines, exit) = read_until(&mut l.events, 30, |ls| !ls.is_empty()).await;
        assert_eq!(exit, None);
        assert!(lines[0].starts_with("running one in "), "{lines:?}");
        assert!(lines[0].ends_with("/versions/1.0"), "{lines:?}");
        assert_eq!(
            PackageExecutor::version_of(&l.instance.record()).as_deref(),
            Some("1.0")
        );

        // Upgrade: 2.0 becomes current, 1.0 is kept.
        let d = deploy(&hosts, &project, &s2, DeployMode::Always, None)
            .await
            .unwrap();
        assert_eq!(
            (d.version.as_str(), d.previous.as_deref()),
            ("2.0", Some("1.0"))
        );
        let st = deployed(&hosts, &project, &s2).await.unwrap();
        assert_eq!(st.current.as_deref(), Some("2.0"));
        assert_eq!(st.previous.as_deref(), Some("1.0"));
        // The running instance keeps running 1.0 until restarted.
        l.instance
            .stop(Signal::TERM, Duration::from_secs(5))
            .await
            .unwrap();
        let (_, exit) = read_until(&mut l.events, 30, |_| false).await;
        assert_eq!(exit, Some(ExitStatus::Signal(15)));
        let mut l = exec.start(&s2, &ctx).await.unwrap();
        let (lines, _) = read_until(&mut l.events, 30, |ls| !ls.is_empty()).await;
        assert!(lines[0].starts_with("running two in "), "{lines:?}");
        assert_eq!(
            PackageExecutor::version_of(&l.instance.record()).as_deref(),
            Some("2.0")
        );
        l.instance
            .stop(Signal::TERM, Duration::from_secs(5))
            .await
            .unwrap();

        // Rollback switches back; a restart with the same configuration keeps it.
        let d = rollback(&hosts, &project, &s2).await.unwrap();
        assert_eq!(
            (d.version.as_str(), d.previous.as_deref()),
            ("1.0", Some("2.0"))
        );
        let mut l = exec.start(&s2, &ctx).await.unwrap();
        let (lines, _) = read_until(&mut l.events, 30, |ls| !ls.is_empty()).await;
        assert!(lines[0].starts_with("running one in "), "{lines:?}");
        l.instance
            .stop(Signal::TERM, Duration::from_secs(5))
            .await
            .unwrap();

        // Redeploying 2.0 needs no upload: it is still on the node.
        let d = deploy(&hosts, &project, &s2, DeployMode::Always, None)
            .await
            .unwrap();
        assert!(d.changed && !d.uploaded, "{d:?}");
        assert_eq!(d.version, "2.0");

        // A .tar.gz package, versioned by its checksum; older versions are pruned.
        let tgz = work.path().join("v3.tar.gz");
        let v3 = package_dir(work.path(), "v3", "three");
        let st = std::process::Command::new("tar")
            .arg("czf")
            .arg(&tgz)
            .arg("-C")
            .arg(&v3)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let s3 = package_spec("app", "n1", &tgz, None);
        let d = deploy(&hosts, &project, &s3, DeployMode::Always, None)
            .await
            .unwrap();
        assert_eq!(d.version.len(), 12);
        assert_eq!(d.previous.as_deref(), Some("2.0"));
        let n1 = hosts.get("n1").unwrap();
        let out = n1
            .run(
                &format!("ls .harness/{project}/app/package/versions | grep -v sha256"),
                None,
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        let mut versions: Vec<String> = out.stdout_text().lines().map(str::to_owned).collect();
        versions.sort();
        let mut want = vec!["2.0".to_owned(), d.version.clone()];
        want.sort();
        assert_eq!(versions, want, "1.0 should have been pruned");

        // A bad version and a missing package are clear errors; nothing changes.
        let bad = package_spec("app", "n1", &v1, Some("../evil"));
        assert!(matches!(
            deploy(&hosts, &project, &bad, DeployMode::Always, None).await,
            Err(PackageError::BadVersion { .. })
        ));
        let missing = package_spec("app", "n1", &work.path().join("nope"), Some("9"));
        assert!(matches!(
            deploy(&hosts, &project, &missing, DeployMode::Always, None).await,
            Err(PackageError::Read { .. })
        ));
        let st = deployed(&hosts, &project, &s3).await.unwrap();
        assert_eq!(st.current.as_deref(), Some(d.version.as_str()));

        // A relative package path is taken relative to the project directory.
        let rel = package_spec("app", "n1", Path::new("v2"), Some("2.0"));
        let d = deploy(
            &hosts,
            &project,
            &rel,
            DeployMode::Always,
            Some(work.path()),
        )
        .await
        .unwrap();
        assert!(d.changed && !d.uploaded, "{d:?}");
        assert_eq!(d.version, "2.0");
        hosts.close_all().await;
    });
}

#[test]
fn a_package_damaged_on_the_way_is_refused_by_its_checksum() {
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(1);
    let work = tempfile::tempdir().unwrap();
    // An ssh client that damages what it sends to the node (letters shifted).
    let damaging = work.path().join("damaging-ssh");
    write_exec(&damaging, "#!/bin/sh\ntr 'a-y' 'b-z' | ssh \"$@\"\n");
    smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;
        let project = project_name();
        let v1 = package_dir(work.path(), "v1", "one");
        let s1 = package_spec("app", "n1", &v1, Some("1.0"));
        deploy(&hosts, &project, &s1, DeployMode::Always, None)
            .await
            .unwrap();

        let bad_link = nodes.hosts(service_orchestration::ssh::SshOptions {
            program: damaging.to_string_lossy().into_owned(),
            multiplex: false,
            ..nodes.options()
        });
        let v2 = package_dir(work.path(), "v2", "two");
        let s2 = package_spec("app", "n1", &v2, Some("2.0"));
        let err = deploy(&bad_link, &project, &s2, DeployMode::Always, None)
            .await
            .expect_err("a damaged package was deployed");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        // Nothing changed on the node, and nothing half-unpacked is left.
        let st = deployed(&hosts, &project, &s1).await.unwrap();
        assert_eq!(st.current.as_deref(), Some("1.0"));
        let out = hosts
            .get("n1")
            .unwrap()
            .run(
                &format!("cd .harness/{project}/app/package && ls versions .incoming"),
                None,
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        let listing = out.stdout_text();
        assert!(!listing.contains("2.0"), "{listing}");
        hosts.close_all().await;
    });
}

/// Through the manager, the registry has a package service on its node, at
/// the node's address, with the version it really runs.
#[test]
fn the_registry_has_a_package_service_on_its_node_with_its_version() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use harness_config::{Network, Project, Settings};
    use harness_core::{ProjectName, ServiceKind, ServiceName};
    use service_orchestration::{ManagerOptions, ServiceManager};
    use service_registry::Location;

    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(1);
    let work = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;
        let v1 = package_dir(work.path(), "v1", "one");
        let app = package_spec("app", "n1", &v1, Some("1.0"));
        let mut networks = BTreeMap::new();
        networks.insert(
            "lan".to_owned(),
            Network::Lan {
                subnet: "10.0.0.0/8".into(),
                nodes: nodes.nodes.clone(),
            },
        );
        let services: BTreeMap<ServiceName, ServiceSpec> =
            BTreeMap::from([(app.name.clone(), app)]);
        let project = Arc::new(
            Project::new(
                ProjectName::new(project_name()).unwrap(),
                Settings::default(),
                networks,
                services,
            )
            .unwrap(),
        );
        let m = ServiceManager::new(project.clone(), ManagerOptions::new(smol_spawner())).unwrap();
        m.register_executor(
            ServiceKind::Package,
            Arc::new(PackageExecutor::new(hosts.clone())),
        );
        m.start_all().unwrap();
        m.wait_ready(&[name("app")], Duration::from_secs(60))
            .await
            .unwrap();
        let entry = m.placement().registry().get("app").expect("registered");
        let node = &nodes.nodes[0];
        assert_eq!(
            entry.location,
            Location::LanNode {
                node: "n1".into(),
                address: node.host.parse().unwrap(),
            }
        );
        assert_eq!(entry.version.as_deref(), Some("1.0"));
        assert_eq!(entry.kind, ServiceKind::Package);
        m.stop_all().await;
        hosts.close_all().await;
    });
}
