//! Helpers shared by the integration tests: projects of real local processes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness_config::{
    Check, Condition, Dependency, Probe, Project, RestartMode, ServiceSpec, Settings,
};
use harness_core::{BoxTask, ProjectName, ServiceName, SharedSpawner};
use service_orchestration::{ManagerOptions, ServiceManager};

pub fn name(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

/// A process service running `sh -c script` in `dir`, never restarted.
pub fn sh(svc: &str, dir: &Path, script: &str) -> ServiceSpec {
    let mut s = ServiceSpec::process(name(svc), "sh", vec!["-c".into(), script.into()]);
    s.working_dir = Some(dir.to_path_buf());
    s.restart.mode = RestartMode::No;
    s.shutdown.timeout = Duration::from_secs(5);
    s
}

pub fn depends(spec: &mut ServiceSpec, on: &str, condition: Condition) {
    spec.dependencies.push(Dependency {
        service: name(on),
        condition,
    });
}

/// A probe checked every 50 ms, failing after `failures` failed attempts.
pub fn probe(check: Check, failures: u32) -> Probe {
    let mut p = Probe::new(check);
    p.period = Duration::from_millis(50);
    p.timeout = Duration::from_secs(2);
    p.failure_threshold = failures;
    p
}

pub fn project(services: Vec<ServiceSpec>) -> Arc<Project> {
    let map: BTreeMap<ServiceName, ServiceSpec> =
        services.into_iter().map(|s| (s.name.clone(), s)).collect();
    Arc::new(
        Project::new(
            ProjectName::new("test").unwrap(),
            Settings::default(),
            BTreeMap::new(),
            map,
        )
        .unwrap(),
    )
}

pub fn smol_spawner() -> SharedSpawner {
    Arc::new(|t: BoxTask| smol::spawn(t).detach())
}

pub fn tokio_spawner() -> SharedSpawner {
    let handle = tokio::runtime::Handle::current();
    Arc::new(move |t: BoxTask| {
        handle.spawn(t);
    })
}

pub fn manager(project: Arc<Project>, spawner: SharedSpawner) -> ServiceManager {
    ServiceManager::new(project, ManagerOptions::new(spawner)).unwrap()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free TCP ports on loopback.
pub fn free_ports<const N: usize>() -> [u16; N] {
    // Hold every listener until all ports are chosen, so they differ.
    let listeners: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// Waits (polling every 20 ms) until `cond` holds, failing the test after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        async_io::Timer::after(Duration::from_millis(20)).await;
    }
}

/// Pids of every live process in process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] = state, f[2] = pgrp
        if f.len() > 2 && f[0] != "Z" && f[2].parse::<u32>().ok() == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

/// Stops everything a test manager started, even when the test failed.
pub struct StopOnDrop(pub ServiceManager);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let m = self.0.clone();
        let pids: Vec<u32> = m.status().iter().filter_map(|s| s.pid).collect();
        for pid in pids {
            // Best effort: SIGKILL the whole group of each service still running.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The first output line of `service` on `events`.
pub async fn first_line_of(
    events: &mut service_orchestration::Subscription,
    service: &str,
) -> String {
    use futures_lite::StreamExt;
    loop {
        match events.next().await {
            Some(service_orchestration::ManagerEvent::Output {
                service: s, line, ..
            }) if s.as_str() == service => {
                return line.text().into_owned();
            }
            Some(_) => {}
            None => panic!("events ended before {service} printed"),
        }
    }
}

/// Waits until `service` has failed; returns why.
pub async fn failure_reason(m: &ServiceManager, service: &str, limit: Duration) -> String {
    use harness_core::ServiceState;
    eventually(&format!("{service} failed"), limit, || {
        matches!(m.state(service), Some(ServiceState::Failed { .. }))
    })
    .await;
    match m.state(service) {
        Some(ServiceState::Failed { reason }) => reason,
        other => panic!("{service} left the failed state: {other:?}"),
    }
}
