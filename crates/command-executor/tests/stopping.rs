//! Stopping means stopped (ADR 021): children that leave the process group
//! (`setsid`, `setpgid`) end with the process, in a cgroup of its own and,
//! without one, through its descendants and marker; also when attached again.

mod common;

use std::time::Duration;

use command_executor::{
    AttachTarget, Attacher, CgroupRoot, FollowFrom, LaunchOptions, LocalAttacher, LocalLauncher,
    ProcessEvent, ProcessScope,
};
use common::*;

/// A shell that starts two children leaving its process group, one by
/// `setsid` (ignoring SIGTERM) and one by `setpgid`, each with `mark` in its
/// arguments, says `ready` once both run, then waits (or exits with `exit`).
fn escaping(mark: &str, exit: bool) -> command_executor::Command {
    sh(&format!(
        "setsid perl -e '$SIG{{TERM}} = q(IGNORE); sleep 1000' {mark}-setsid & \
         perl -e 'setpgrp; sleep 1000' {mark}-setpgid & \
         while [ \"$(grep -l {mark} /proc/[0-9]*/cmdline 2>/dev/null | wc -l)\" -lt 2 ]; do sleep 0.02; done; \
         echo ready; {}",
        if exit { "exit 0" } else { "wait" }
    ))
}

/// Live processes with `mark` in one of their arguments.
fn marked(mark: &str) -> Vec<u32> {
    command_executor::all_pids()
        .into_iter()
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            alive(*pid)
                && cmdline
                    .split(|&b| b == 0)
                    .any(|a| a.starts_with(mark.as_bytes()))
        })
        .collect()
}

/// Kills what a test leaves behind (processes by mark, its cgroup root).
struct Cleanup {
    mark: String,
    root: Option<CgroupRoot>,
}

impl Cleanup {
    fn new(test: &str) -> Cleanup {
        Cleanup {
            mark: format!("stop-test-{}-{test}", std::process::id()),
            root: None,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in marked(&self.mark) {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        if let Some(root) = &self.root {
            root.remove_all();
        }
    }
}

/// A cgroup root of this test's own, or why there is none (printed: the test
/// then checks nothing).
fn cgroup_root(c: &mut Cleanup) -> Option<CgroupRoot> {
    let name = format!("harness-test-{}", c.mark);
    match CgroupRoot::below_own(&name) {
        Ok(root) => {
            c.root = Some(root.clone());
            Some(root)
        }
        Err(e) => {
            eprintln!("skipping: cgroup v2 is not usable here: {e}");
            None
        }
    }
}

/// A launcher and an attacher with a cgroup root of the test's own, or
/// without cgroups; `None` where cgroups were asked for but are not usable.
fn launcher_and_attacher(c: &mut Cleanup, cgroup: bool) -> Option<(LocalLauncher, LocalAttacher)> {
    if !cgroup {
        return Some((LocalLauncher::new(), LocalAttacher::new()));
    }
    let root = cgroup_root(c)?;
    Some((
        LocalLauncher::new().with_cgroups(root.clone()),
        LocalAttacher::new().with_cgroups(root),
    ))
}

fn options(cgroup: bool) -> LaunchOptions {
    LaunchOptions {
        cgroup: cgroup.then(|| "proj/svc".to_owned()),
        marker: Some("TEST_RUN_ID".to_owned()),
        ..LaunchOptions::default()
    }
}

async fn ready(ev: &mut command_executor::EventStream) {
    events_until(
        ev,
        30,
        |e| matches!(e, ProcessEvent::Output(l) if l.text() == "ready"),
    )
    .await;
}

#[test]
fn in_a_cgroup_stop_ends_children_that_left_the_group() {
    let mut c = Cleanup::new("cgroup");
    let Some(root) = cgroup_root(&mut c) else {
        return;
    };
    smol::block_on(async {
        let launcher = LocalLauncher::new().with_cgroups(root.clone());
        let (h, mut ev) = launcher
            .spawn(&escaping(&c.mark, false), options(true))
            .unwrap();
        let dir = h.scope().cgroup.clone().expect("a cgroup of its own");
        assert!(dir.starts_with(root.path().join("proj/svc")), "{dir:?}");
        assert!(h.scope().marker.is_some());
        ready(&mut ev).await;
        assert_eq!(marked(&c.mark).len(), 2);
        let status = within(60, "stop", h.stop(Duration::from_millis(300)))
            .await
            .unwrap();
        assert_eq!(status, harness_core::ExitStatus::Signal(15));
        assert!(marked(&c.mark).is_empty(), "left: {:?}", marked(&c.mark));
        assert!(!dir.exists(), "the cgroup is removed");
        assert!(!root.path().join("proj").exists(), "its empty parents too");
        assert!(root.path().exists(), "not the root");
    });
}

#[test]
fn without_a_cgroup_stop_ends_children_that_left_the_group() {
    let c = Cleanup::new("tree");
    smol::block_on(async {
        let (h, mut ev) = LocalLauncher::new()
            .spawn(&escaping(&c.mark, false), options(true))
            .unwrap();
        assert_eq!(h.scope().cgroup, None, "no root: no cgroup");
        ready(&mut ev).await;
        assert_eq!(marked(&c.mark).len(), 2);
        within(60, "stop", h.stop(Duration::from_millis(300)))
            .await
            .unwrap();
        assert!(marked(&c.mark).is_empty(), "left: {:?}", marked(&c.mark));
    });
}

/// The leader exits on its own, leaving both children running (they
/// are no longer its descendants); stopping it afterwards ends them.
fn leftovers_of_an_exited_leader_are_stopped(c: &mut Cleanup, cgroup: bool) {
    let Some((launcher, _)) = launcher_and_attacher(c, cgroup) else {
        return;
    };
    smol::block_on(async {
        let (h, mut ev) = launcher
            .spawn(&escaping(&c.mark, true), options(cgroup))
            .unwrap();
        let events = all_events(&mut ev, 30).await;
        assert_well_formed(&events);
        assert_eq!(marked(&c.mark).len(), 2, "the children outlive the leader");
        within(60, "kill", h.kill()).await.unwrap();
        assert!(marked(&c.mark).is_empty(), "left: {:?}", marked(&c.mark));
    });
}

#[test]
fn leftovers_of_an_exited_leader_are_stopped_in_a_cgroup() {
    leftovers_of_an_exited_leader_are_stopped(&mut Cleanup::new("exited-cg"), true);
}

#[test]
fn leftovers_of_an_exited_leader_are_stopped_by_their_marker() {
    leftovers_of_an_exited_leader_are_stopped(&mut Cleanup::new("exited-tree"), false);
}

/// Launches, forgets the handle, attaches again from the identity and scope
/// (as a new daemon does from its state) and stops through the attachment.
fn attached_again_stop_ends_everything(c: &mut Cleanup, cgroup: bool) {
    let Some((launcher, attacher)) = launcher_and_attacher(c, cgroup) else {
        return;
    };
    smol::block_on(async {
        let (h, mut ev) = launcher
            .spawn(&escaping(&c.mark, false), options(cgroup))
            .unwrap();
        ready(&mut ev).await;
        let (identity, scope) = (h.identity(), h.scope().clone());
        drop(h);
        drop(ev);
        let (a, _aev) = attacher
            .attach(AttachTarget {
                identity,
                stdout_log: None,
                stderr_log: None,
                follow_from: FollowFrom::End,
                scope: scope.clone(),
            })
            .await
            .unwrap();
        assert_eq!(a.scope(), &scope);
        within(60, "attached stop", a.stop(Duration::from_millis(300)))
            .await
            .unwrap();
        assert!(marked(&c.mark).is_empty(), "left: {:?}", marked(&c.mark));
        if let Some(dir) = &scope.cgroup {
            assert!(!dir.exists(), "the cgroup is removed");
        }
    });
}

#[test]
fn attached_again_stop_ends_everything_in_a_cgroup() {
    attached_again_stop_ends_everything(&mut Cleanup::new("attach-cg"), true);
}

#[test]
fn attached_again_stop_ends_everything_by_the_marker() {
    attached_again_stop_ends_everything(&mut Cleanup::new("attach-tree"), false);
}

#[test]
fn a_cgroup_the_attacher_does_not_own_is_never_used() {
    let mut c = Cleanup::new("not-owned");
    let Some(root) = cgroup_root(&mut c) else {
        return;
    };
    smol::block_on(async {
        let (h, _ev) = LocalLauncher::new()
            .spawn(&sh("sleep 300"), LaunchOptions::default())
            .unwrap();
        let _g = GroupGuard(h.identity());
        let own = command_executor::cgroup_of(std::process::id()).expect("own cgroup");
        for foreign in [own.clone(), own.join("elsewhere/x")] {
            let (a, _aev) = LocalAttacher::new()
                .with_cgroups(root.clone())
                .attach(AttachTarget {
                    scope: ProcessScope {
                        cgroup: Some(foreign.clone()),
                        marker: None,
                    },
                    ..AttachTarget::process(h.identity())
                })
                .await
                .unwrap();
            assert_eq!(a.scope().cgroup, None, "{foreign:?} is not the root's");
        }
        within(60, "stop", h.stop(Duration::from_secs(5)))
            .await
            .unwrap();
    });
}

#[test]
fn a_process_of_another_user_joins_its_cgroup_before_switching() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: switching user needs root");
        return;
    }
    let mut c = Cleanup::new("user");
    let Some(root) = cgroup_root(&mut c) else {
        return;
    };
    smol::block_on(async {
        let launcher = LocalLauncher::new().with_cgroups(root);
        let report = "echo $(id -u):$(id -g):$(id -G); grep '^0::' /proc/self/cgroup";
        for cmd in [
            // Without groups: root's supplementary groups are dropped.
            sh(report).user(65534).group(65534),
            sh(report).user(65534).group(65534).groups([65534, 4242]),
        ] {
            let want_groups = match cmd.get_groups() {
                Some(_) => "65534:65534:65534 4242",
                None => "65534:65534:65534",
            };
            let (h, mut ev) = launcher.spawn(&cmd, options(true)).unwrap();
            let dir = h.scope().cgroup.clone().unwrap();
            let events = all_events(&mut ev, 30).await;
            let got = lines(&events);
            assert_eq!(got[0], want_groups);
            let own = command_executor::parse_proc_cgroup(&format!("{}\n", got[1])).unwrap();
            assert!(
                dir.ends_with(own.trim_start_matches('/')),
                "{dir:?} vs {own}"
            );
            within(30, "stop", h.kill()).await.unwrap();
            assert!(!dir.exists());
        }
    });
}
