//! Services start, fail and restart the way users expect, and every failure
//! says why: in `status`, in `up --wait`'s error and in the service's log.
//! Real daemon, real processes.

mod support;

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use harness_core::{OutputStream, ServiceName, ServiceState, ServiceStatus};
use harness_protocol::{Client, LogsParams, ProjectRef, ServicesParams, StreamItem, UpParams};
use support::*;

async fn status_of(c: &Client, name: &str) -> ServiceStatus {
    service_status(&c.status(ServicesParams::default()).await.unwrap(), name)
}

/// Waits until `pred` holds for service `name`'s status; returns that status.
async fn wait_for(
    c: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let until = Instant::now() + DEADLINE;
    loop {
        let s = status_of(c, name).await;
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < until,
            "{name}: {what} not reached; last: {s:?}"
        );
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

/// Every line of service `name`'s log: (stream, text).
async fn log_lines(c: &Client, name: &str) -> Vec<(OutputStream, String)> {
    let mut s = c
        .logs(LogsParams {
            services: vec![ServiceName::new(name).unwrap()],
            ..LogsParams::default()
        })
        .unwrap();
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        if let StreamItem::Log(l) = item.unwrap() {
            out.push((l.stream, l.line));
        }
    }
    out
}

/// Waits until service `name`'s log has a harness line containing `text`.
async fn wait_for_lifecycle_line(c: &Client, name: &str, text: &str) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        let lines = log_lines(c, name).await;
        if let Some((_, l)) = lines
            .iter()
            .find(|(s, l)| *s == OutputStream::Harness && l.contains(text))
        {
            return l.clone();
        }
        assert!(
            Instant::now() < until,
            "{name}: no harness line with `{text}` in {lines:?}"
        );
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

async fn down(c: &Client, project: &ProjectRef) {
    c.down(ServicesParams {
        project: project.clone(),
        ..ServicesParams::default()
    })
    .await
    .unwrap();
}

fn up(project: &ProjectRef, wait: bool, timeout: Duration) -> UpParams {
    UpParams {
        project: project.clone(),
        wait,
        timeout_ms: Some(timeout.as_millis() as u64),
        ..UpParams::default()
    }
}

/// A service that takes 3 s to boot, with a check every second and three
/// retries, is never killed for failing it while it boots: `up --wait`
/// returns once it is healthy, with the same pid and no restart.
#[test]
fn a_slow_booting_service_with_a_tight_check_is_waited_for_not_killed() {
    let d = TestDaemon::start();
    let yaml = r#"
name: slowboot
services:
  api:
    type: process
    binary: sh
    args: [-c, "sleep 3; touch ready; exec sleep 600"]
    health_check:
      command: test
      args: [-f, ready]
      interval: 1
      retries: 3
"#;
    let project = project_file(d.dir.path(), yaml);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let first = {
            let c2 = Client::connect(&d.state).await.unwrap();
            c2.up(up(&project, false, DEADLINE)).await.unwrap();
            wait_for(&c, "api", "a pid", |s| s.pid.is_some()).await
        };
        let _guard = Pids(first.pid.into_iter().collect());
        let st = c.up(up(&project, true, DEADLINE)).await.unwrap();
        let api = st
            .services
            .iter()
            .find(|s| s.name.as_str() == "api")
            .unwrap();
        assert_eq!(api.state, ServiceState::Healthy, "{api:?}");
        assert_eq!(api.pid, first.pid, "the booting process was not replaced");
        assert_eq!(api.restarts, 0);
        down(&c, &project).await;
    });
}

/// `start_period` as in compose: a service ready after a second is healthy
/// then, not at the end of a 30 s start period.
#[test]
fn a_pass_inside_start_period_counts_at_once() {
    let d = TestDaemon::start();
    let yaml = r#"
name: startperiod
services:
  api:
    type: process
    binary: sh
    args: [-c, "sleep 1; touch ready; exec sleep 600"]
    health_check:
      command: test
      args: [-f, ready]
      interval: 1
      retries: 3
      start_period: 30
"#;
    let project = project_file(d.dir.path(), yaml);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        // Waiting less than the start period: it must be healthy well before it ends.
        let st = c.up(up(&project, true, Duration::from_secs(15))).await;
        let st = st.unwrap_or_else(|e| panic!("not healthy within 15s: {e}"));
        let api = st
            .services
            .iter()
            .find(|s| s.name.as_str() == "api")
            .unwrap();
        let _guard = Pids(api.pid.into_iter().collect());
        assert_eq!(api.state, ServiceState::Healthy);
        down(&c, &project).await;
    });
}

/// A check that never passes fails the service at its startup timeout, with
/// the timeout and what the last check said, in status and in its log.
#[test]
fn a_service_never_healthy_fails_at_its_startup_timeout_naming_the_last_check() {
    let d = TestDaemon::start();
    let yaml = r#"
name: neverready
services:
  api:
    type: process
    binary: sleep
    args: ["600"]
    startup_timeout: 2s
    health_check:
      http: http://127.0.0.1:1/health
      interval: 0.2
"#;
    let project = project_file(d.dir.path(), yaml);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let err = c
            .up(up(&project, true, DEADLINE))
            .await
            .expect_err("never healthy");
        let msg = err.to_string();
        assert!(
            msg.contains("not healthy within 2s: last check: cannot connect to 127.0.0.1:1"),
            "{msg}"
        );
        let api = wait_for(&c, "api", "failed", |s| {
            matches!(s.state, ServiceState::Failed { .. })
        })
        .await;
        match &api.state {
            ServiceState::Failed { reason } => {
                assert!(reason.starts_with("not healthy within 2s"), "{reason}")
            }
            s => panic!("expected failed, got {s}"),
        }
        wait_for_lifecycle_line(&c, "api", "not healthy within 2s").await;
        down(&c, &project).await;
    });
}

/// A missing binary and a missing working directory are named as such: in
/// status (failed and restarting), in `up --wait`'s error and in the log.
#[test]
fn spawn_failures_name_the_missing_binary_and_directory_everywhere() {
    let d = TestDaemon::start();
    let missing_dir = d.dir.path().join("no-such-dir");
    let yaml = format!(
        r#"
name: spawnfail
services:
  nobin:
    type: process
    binary: /opt/harness-missing/api
    restart: "no"
  nodir:
    type: process
    binary: sleep
    args: ["600"]
    working_dir: {}
    restart: "no"
  retrying:
    type: process
    binary: harness-no-such-binary
    restart: always
"#,
        missing_dir.display()
    );
    let project = project_file(d.dir.path(), &yaml);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let err = c
            .up(UpParams {
                services: vec![ServiceName::new("nobin").unwrap()],
                ..up(&project, true, DEADLINE)
            })
            .await
            .expect_err("cannot start");
        assert!(
            err.to_string()
                .contains("cannot start: binary /opt/harness-missing/api not found"),
            "{err}"
        );
        c.up(up(&project, false, DEADLINE)).await.ok();
        let nodir = wait_for(&c, "nodir", "failed", |s| {
            matches!(s.state, ServiceState::Failed { .. })
        })
        .await;
        assert_eq!(
            nodir.state,
            ServiceState::Failed {
                reason: format!(
                    "cannot start: working directory {} does not exist",
                    missing_dir.display()
                )
            }
        );
        let retrying = wait_for(
            &c,
            "retrying",
            "restarting with a reason",
            |s| matches!(&s.state, ServiceState::Restarting { reason, .. } if !reason.is_empty()),
        )
        .await;
        let ServiceState::Restarting { reason, .. } = &retrying.state else {
            unreachable!()
        };
        assert!(
            reason.starts_with("cannot start: binary `harness-no-such-binary` not found in PATH ("),
            "{reason}"
        );
        wait_for_lifecycle_line(
            &c,
            "nobin",
            "cannot start: binary /opt/harness-missing/api not found",
        )
        .await;
        let line = wait_for_lifecycle_line(&c, "retrying", "not found in PATH").await;
        assert!(line.contains("; restart 1 in "), "{line}");
        down(&c, &project).await;
    });
}

/// A kill -9 of a service shows in its log and in `last_exit`, and the
/// restart that follows comes fast (the first within 100 ms by default).
#[test]
fn a_kill_9_of_a_service_is_in_its_log_and_restarted_fast() {
    let d = TestDaemon::start();
    let yaml = r#"
name: killed
services:
  api:
    type: process
    binary: sleep
    args: ["600"]
    restart: always
"#;
    let project = project_file(d.dir.path(), yaml);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = c.up(up(&project, true, DEADLINE)).await.unwrap();
        let pid = st.services[0].pid.expect("pid");
        let mut guard = Pids(vec![pid]);
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let after = wait_for(&c, "api", "a new pid", |s| {
            s.pid.is_some_and(|p| p != pid) && s.state.is_alive()
        })
        .await;
        guard.0.extend(after.pid);
        assert_eq!(after.restarts, 1);
        let last = after.last_exit.expect("last_exit");
        assert_eq!(last.status, harness_core::ExitStatus::Signal(9));
        assert!(
            last.message.starts_with("killed by SIGKILL after "),
            "{last:?}"
        );
        let line = wait_for_lifecycle_line(&c, "api", "killed by SIGKILL").await;
        let delay: Vec<&str> = line.rsplit("restart 1 in ").collect();
        assert!(
            delay[0].ends_with("ms"),
            "the first restart comes within a second: {line}"
        );
        down(&c, &project).await;
    });
}

/// A `restart: always` service waiting for its next attempt when the daemon
/// is killed is restarted by the next daemon, its restart count kept; a
/// re-adopted service keeps its start time and restart count.
#[test]
fn restart_state_and_run_start_survive_a_daemon_kill_9() {
    let mut d = TestDaemon::start();
    let yaml = r#"
name: survivor
services:
  crashy:
    type: process
    binary: sh
    args: [-c, "sleep 0.2; exit 1"]
    restart:
      mode: always
      backoff: {initial: 4s, max: 4s, jitter: 0}
  steady:
    type: process
    binary: sleep
    args: ["600"]
"#;
    let project = project_file(d.dir.path(), yaml);
    let mut guard = Pids(Vec::new());
    let (steady_before, restarts_before) = smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        c.up(up(&project, false, DEADLINE)).await.unwrap();
        let crashy = wait_for(&c, "crashy", "restarting", |s| {
            matches!(s.state, ServiceState::Restarting { .. })
        })
        .await;
        let steady = wait_for(&c, "steady", "running", |s| s.pid.is_some()).await;
        guard.0.extend(steady.pid);
        (steady, crashy.restarts)
    });
    assert_eq!(restarts_before, 1);
    // Two persist periods, then kill -9 while crashy waits for its restart.
    std::thread::sleep(Duration::from_millis(1200));
    d.signal(rustix::process::Signal::KILL);
    d.wait_exit();
    d.spawn(&[]);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let steady = status_of(&c, "steady").await;
        assert_eq!(steady.pid, steady_before.pid);
        assert_eq!(
            steady.started_at_ms, steady_before.started_at_ms,
            "re-adoption is not a new start"
        );
        assert_eq!(steady.restarts, 0);
        let crashy = wait_for(&c, "crashy", "started again by the new daemon", |s| {
            s.restarts > restarts_before
        })
        .await;
        assert!(crashy.restarts >= 2, "{crashy:?}");
        down(&c, &project).await;
    });
}

/// A TCP check on a port another process held before the service started
/// does not call the service healthy: the reason names the port and holder.
#[test]
fn a_port_held_by_another_process_is_named_not_taken_for_health() {
    let d = TestDaemon::start();
    let held = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let yaml = format!(
        r#"
name: portheld
services:
  api:
    type: process
    binary: sleep
    args: ["600"]
    startup_timeout: 2s
    health_check:
      tcp: {{port: {port}}}
      interval: 0.2
"#
    );
    let project = project_file(d.dir.path(), &yaml);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let err = c
            .up(up(&project, true, DEADLINE))
            .await
            .expect_err("another process holds the port");
        let me = std::process::id();
        let want = format!("port {port} was already taken by pid {me} (");
        assert!(err.to_string().contains(&want), "{err}");
        wait_for_lifecycle_line(&c, "api", &want).await;
        down(&c, &project).await;
    });
    drop(held);
}

/// With an open-file limit of 1024, 500 services: the daemon raises its soft
/// limit as far as it may, and a service that still cannot start for want
/// of descriptors says so; none restarts without a reason.
#[test]
fn at_an_open_file_limit_of_1024_every_service_runs_or_names_the_limit() {
    let mut d = TestDaemon::start();
    d.signal(rustix::process::Signal::TERM);
    d.wait_exit();
    d.spawn_after("ulimit -n 1024", &[]);
    let project = write_project(d.dir.path(), "fds", 500, true);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        c.up(up(&project, false, DEADLINE)).await.unwrap();
        let until = Instant::now() + DEADLINE;
        let statuses = loop {
            let st = c.status(ServicesParams::default()).await.unwrap();
            let services = st[0].services.clone();
            let settled = services
                .iter()
                .all(|s| s.pid.is_some() || matches!(s.state, ServiceState::Restarting { .. }));
            if settled || Instant::now() > until {
                break services;
            }
            async_io::Timer::after(Duration::from_millis(100)).await;
        };
        let _guard = Pids(statuses.iter().filter_map(|s| s.pid).collect());
        let mut limited = 0;
        for s in &statuses {
            match &s.state {
                _ if s.pid.is_some() => {}
                ServiceState::Restarting { reason, .. } => {
                    assert!(
                        reason.contains("Too many open files")
                            || reason.contains("too many open files"),
                        "{}: {reason}",
                        s.name
                    );
                    limited += 1;
                }
                other => panic!("{}: {other}", s.name),
            }
        }
        eprintln!(
            "{} of 500 running at RLIMIT_NOFILE 1024, {limited} waiting to restart for want of descriptors",
            500 - limited
        );
        down(&c, &project).await;
    });
}

/// `up --wait` on a service that keeps crashing does not wait out its
/// timeout: after a few restarts in a row it ends naming the reason, while
/// the service goes on being restarted per its policy.
#[test]
fn up_wait_ends_on_a_crash_loop_naming_why() {
    let d = TestDaemon::start();
    let yaml = r#"
name: crashloop
services:
  api:
    type: process
    binary: sh
    args: [-c, "echo 'fatal: no config' >&2; sleep 0.2; exit 1"]
    restart: always
    health_check: {command: test, args: [-f, never-there], interval: 0.1}
"#;
    let project = project_file(d.dir.path(), yaml);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let err = c
            .up(UpParams {
                timeout_ms: Some(300_000),
                ..up(&project, true, DEADLINE)
            })
            .await
            .expect_err("it never runs");
        let msg = err.to_string();
        assert!(
            msg.contains("it keeps failing (restarting (attempt 3")
                && msg.contains("exited with code 1 after"),
            "{msg}"
        );
        // Still restarted per its policy.
        wait_for(&c, "api", "restarted again", |s| s.restarts >= 4).await;
        down(&c, &project).await;
    });
}
