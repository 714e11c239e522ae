//! Stopping means stopped (ADR 021), against a real daemon: a service whose
//! children leave its process group (`setsid`, `setpgid`) is all gone after
//! `down`, in a cgroup of its own and in the fallback (`HARNESS_CGROUPS=off`),
//! also after the daemon was killed with SIGKILL and a new one re-adopted it.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use harness_protocol::{Client, ProjectRef, ServicesParams, Stopping};
use support::*;

/// Live processes with `mark` at the start of one of their arguments.
fn marked(mark: &str) -> Vec<u32> {
    command_executor::all_pids()
        .into_iter()
        .filter(|&pid| {
            alive(pid)
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a.starts_with(mark.as_bytes())))
        })
        .collect()
}

/// Zombies whose parent is `parent`.
fn zombie_children(parent: u32) -> Vec<u32> {
    command_executor::all_pids()
        .into_iter()
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                let rest: Vec<&str> = s
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                rest.first() == Some(&"Z") && rest.get(1) == Some(&parent.to_string().as_str())
            })
        })
        .collect()
}

/// Kills the marked processes a failed test leaves.
struct Marked(String);

impl Drop for Marked {
    fn drop(&mut self) {
        for pid in marked(&self.0) {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
}

/// A project whose service `esc` starts two children that leave its
/// process group, one by `setsid` (ignoring SIGTERM), one by `setpgid`,
/// each with `mark` in its arguments, then waits.
fn escaping_project(dir: &Path, name: &str, mark: &str) -> ProjectRef {
    let script = dir.join("esc.sh");
    std::fs::write(
        &script,
        format!(
            "setsid perl -e '$SIG{{TERM}} = q(IGNORE); sleep 1000' {mark}-setsid &\n\
             perl -e 'setpgrp; sleep 1000' {mark}-setpgid &\n\
             wait\n"
        ),
    )
    .unwrap();
    project_file(
        dir,
        &format!(
            "name: {name}\nservices:\n  esc:\n    type: process\n    binary: sh\n    args: ['{}']\n    shutdown_timeout: 1s\n",
            script.display()
        ),
    )
}

/// Waits until `cond` holds, failing with `what` after the deadline.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {DEADLINE:?}");
        async_io::Timer::after(Duration::from_millis(20)).await;
    }
}

/// How the daemon goes on after the service started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// It keeps running.
    Runs,
    /// It is killed with SIGKILL and a new one re-adopts the service from
    /// its state.
    Restarts,
    /// Likewise, but its state files are lost: the new one finds the
    /// service in `/proc` (ADR 020), its cgroup and marker too.
    RestartsWithoutState,
}

/// Runs the escaping service on a daemon started with `env`, then as `then`
/// says; then `down`: nothing marked is left, nor a cgroup of it, nor a
/// zombie of the daemon.
fn down_leaves_nothing(test: &str, env: &[(&str, &str)], cgroup: bool, then: Then) {
    let mut d = TestDaemon::start_with_env(&[], env);
    let mark = format!("stop-{test}-{}", std::process::id());
    let _guard = Marked(mark.clone());
    let project = escaping_project(d.dir.path(), test, &mark);
    let stopping = smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        c.daemon_status().await.unwrap().stopping
    });
    match (&stopping, cgroup) {
        (Some(Stopping::Cgroup { root }), true) => {
            assert!(
                root.ends_with(harnessd::targets::cgroup_name(&d.state)),
                "{root:?}"
            );
        }
        (Some(Stopping::ProcessGroup { reason, .. }), true) => {
            eprintln!("skipping: the daemon does not use cgroups here: {reason}");
            return;
        }
        (Some(Stopping::ProcessGroup { subreaper, reason }), false) => {
            assert!(*subreaper, "{reason}");
            assert!(reason.contains("HARNESS_CGROUPS=off"), "{reason}");
        }
        other => panic!("unexpected stopping mode {other:?}"),
    }
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        up_wait(&c, &project).await;
        until("both children running", || marked(&mark).len() == 2).await;
    });
    if then != Then::Runs {
        // Let the state be persisted, then kill -9 and start a new daemon.
        std::thread::sleep(Duration::from_millis(1200));
        d.signal(rustix::process::Signal::KILL);
        d.wait_exit();
        assert_eq!(marked(&mark).len(), 2, "the service outlives its daemon");
        if then == Then::RestartsWithoutState {
            let sd = harness_protocol::StateDir::new(&d.state);
            std::fs::remove_file(sd.state_file()).unwrap();
            std::fs::remove_file(sd.last_good_state_file()).unwrap();
        }
        d.spawn(&[]);
    }
    let daemon = d.pid();
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = c.status(ServicesParams::default()).await.unwrap();
        assert!(service_status(&st, "esc").state.is_alive(), "{st:?}");
        c.down(ServicesParams {
            project: project.clone(),
            ..ServicesParams::default()
        })
        .await
        .unwrap();
    });
    assert!(
        marked(&mark).is_empty(),
        "left after down: {:?}",
        marked(&mark)
    );
    if let Some(Stopping::Cgroup { root }) = &stopping {
        assert!(
            !root.join(test).exists(),
            "the project's cgroups are removed"
        );
    }
    assert!(
        zombie_children(daemon).is_empty(),
        "zombies of the daemon: {:?}",
        zombie_children(daemon)
    );
}

const OFF: &[(&str, &str)] = &[("HARNESS_CGROUPS", "off")];

#[test]
fn down_ends_children_that_left_the_group_in_a_cgroup() {
    down_leaves_nothing("stop-cg", &[], true, Then::Runs);
}

#[test]
fn down_ends_them_in_a_cgroup_after_a_kill_9_and_a_new_daemon() {
    down_leaves_nothing("stop-cg-again", &[], true, Then::Restarts);
}

#[test]
fn down_ends_them_in_a_cgroup_found_again_in_proc_without_state() {
    down_leaves_nothing("stop-cg-proc", &[], true, Then::RestartsWithoutState);
}

#[test]
fn down_ends_children_that_left_the_group_in_the_fallback() {
    down_leaves_nothing("stop-fallback", OFF, false, Then::Runs);
}

#[test]
fn down_ends_them_in_the_fallback_after_a_kill_9_and_a_new_daemon() {
    down_leaves_nothing("stop-fallback-again", OFF, false, Then::Restarts);
}

#[test]
fn down_ends_them_in_the_fallback_found_again_in_proc_without_state() {
    down_leaves_nothing("stop-fallback-proc", OFF, false, Then::RestartsWithoutState);
}
