//! `ServiceManager::reconcile` with real local processes: only what changed restarts.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use harness_config::{Condition, Project, ServiceSpec};
use harness_core::{ServiceName, ServiceState};
use service_orchestration::{ManagerError, ManagerOptions, Reconciled, ServiceManager};

const LONG: Duration = Duration::from_secs(30);

/// db, api (waits for db to start; refers to nothing) and worker, each a long sleep.
fn specs(d: &std::path::Path) -> Vec<ServiceSpec> {
    let db = sh("db", d, "exec sleep 60");
    let mut api = sh("api", d, "exec sleep 60");
    depends(&mut api, "db", Condition::Started);
    let worker = sh("worker", d, "exec sleep 60");
    vec![db, api, worker]
}

fn pids(m: &ServiceManager) -> BTreeMap<ServiceName, Option<u32>> {
    m.status().into_iter().map(|s| (s.name, s.pid)).collect()
}

async fn reconcile(m: &ServiceManager, next: Arc<Project>) -> Reconciled {
    let spawner = smol_spawner();
    m.reconcile(next, |p| async move {
        ServiceManager::new(p, ManagerOptions::new(spawner))
    })
    .await
    .expect("a manager is built")
}

async fn all_running(m: &ServiceManager, services: &[&str]) {
    let names: Vec<ServiceName> = services.iter().map(|s| name(s)).collect();
    m.wait_ready(&names, LONG).await.unwrap();
}

#[test]
fn an_environment_change_restarts_only_that_service() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(project(specs(dir.path())), smol_spawner());
        let _g = StopOnDrop(m.clone());
        m.start_all().unwrap();
        all_running(&m, &["db", "api", "worker"]).await;
        let before = pids(&m);

        // db's environment changes; api waits only for db to start, so it runs on.
        let mut next = specs(dir.path());
        next[0].env.insert("MODE".into(), "prod".into());
        let done = reconcile(&m, project(next)).await;
        let m2 = done.manager.clone();
        let _g2 = StopOnDrop(m2.clone());
        assert_eq!(done.restarted, [name("db")]);
        assert!(done.errors.is_empty(), "{:?}", done.errors);
        all_running(&m2, &["db", "api", "worker"]).await;
        let after = pids(&m2);
        assert_ne!(after[&name("db")], before[&name("db")], "db restarted");
        assert_eq!(after[&name("api")], before[&name("api")]);
        assert_eq!(after[&name("worker")], before[&name("worker")]);
        m2.stop_all().await;
    });
}

#[test]
fn added_services_start_and_removed_ones_stop() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(project(specs(dir.path())), smol_spawner());
        let _g = StopOnDrop(m.clone());
        m.start_all().unwrap();
        all_running(&m, &["db", "api", "worker"]).await;
        let before = pids(&m);
        let worker_pid = before[&name("worker")].unwrap();

        let mut next = specs(dir.path());
        next.pop();
        next.push(sh("extra", dir.path(), "exec sleep 60"));
        let done = reconcile(&m, project(next)).await;
        let m2 = done.manager.clone();
        let _g2 = StopOnDrop(m2.clone());
        assert_eq!(done.added, [name("extra")]);
        assert_eq!(done.stopped, [name("worker")]);
        assert!(done.restarted.is_empty());
        all_running(&m2, &["db", "api", "extra"]).await;
        assert!(group_members(worker_pid).is_empty(), "worker stopped");
        let after = pids(&m2);
        assert_eq!(after[&name("db")], before[&name("db")]);
        assert_eq!(after[&name("api")], before[&name("api")]);
        assert!(!after.contains_key(&name("worker")));
        m2.stop_all().await;
    });
}

#[test]
fn a_description_change_restarts_nothing() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(project(specs(dir.path())), smol_spawner());
        let _g = StopOnDrop(m.clone());
        m.start_all().unwrap();
        all_running(&m, &["db", "api", "worker"]).await;
        let before = pids(&m);

        let mut next = specs(dir.path());
        next[1].description = Some("the api".into());
        next[2].labels.insert("team".into(), "core".into());
        let done = reconcile(&m, project(next)).await;
        let m2 = done.manager.clone();
        let _g2 = StopOnDrop(m2.clone());
        assert!(done.is_noop(), "{done:?}");
        assert_eq!(done.changes.in_place(), [name("api"), name("worker")]);
        all_running(&m2, &["db", "api", "worker"]).await;
        assert_eq!(pids(&m2), before);
        assert_eq!(
            m2.project().services[&name("api")].description.as_deref(),
            Some("the api")
        );
        m2.stop_all().await;
    });
}

/// A dependent that waited for a job to complete runs again when the job changes;
/// a service never started that changed is not started.
#[test]
fn a_changed_job_restarts_what_completed_on_it() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let make = |marker: &str| {
            let mut job = sh("migrate", d, &format!("echo {marker} >> runs"));
            job.job = true;
            let mut api = sh("api", d, "exec sleep 60");
            depends(&mut api, "migrate", Condition::CompletedSuccessfully);
            let idle = sh("idle", d, &format!("exec sleep 6{}", marker.len()));
            vec![job, api, idle]
        };
        let m = manager(project(make("one")), smol_spawner());
        let _g = StopOnDrop(m.clone());
        m.start(&[name("api")]).unwrap();
        all_running(&m, &["api"]).await;
        let api_pid = pids(&m)[&name("api")];

        let done = reconcile(&m, project(make("three"))).await;
        let m2 = done.manager.clone();
        let _g2 = StopOnDrop(m2.clone());
        assert_eq!(done.restarted, [name("idle"), name("migrate"), name("api")]);
        all_running(&m2, &["api"]).await;
        assert_ne!(pids(&m2)[&name("api")], api_pid);
        let runs = std::fs::read_to_string(d.join("runs")).unwrap();
        assert_eq!(runs, "one\nthree\n");
        assert_eq!(
            m2.state("idle"),
            Some(ServiceState::Pending),
            "never started"
        );
        m2.stop_all().await;
    });
}

#[test]
fn a_failing_build_leaves_the_old_manager_in_charge() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(project(specs(dir.path())), smol_spawner());
        let _g = StopOnDrop(m.clone());
        m.start_all().unwrap();
        all_running(&m, &["db", "api", "worker"]).await;
        let mut next = specs(dir.path());
        next[2].env.insert("X".into(), "1".into());
        let r = m
            .reconcile(project(next), |_| async {
                Err::<ServiceManager, _>(ManagerError::UnknownService("none".into()))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(m.state("worker"), Some(ServiceState::Stopped));
        assert!(matches!(m.state("db"), Some(ServiceState::Running)));
        m.stop_all().await;
    });
}
