//! Attaching to running processes under smol.

mod common;

use std::time::Duration;

use command_executor::{
    AttachTarget, Attacher, Command, ExecError, FollowFrom, LaunchOptions, LocalAttacher,
    LocalLauncher, ProcessEvent, ProcessIdentity,
};
use common::*;
use harness_core::ExitStatus;

#[test]
fn a_wrong_start_time_is_refused() {
    smol::block_on(async {
        let (h, _ev) = LocalLauncher::new()
            .spawn(&Command::new("sleep").arg("300"), LaunchOptions::default())
            .unwrap();
        let _g = GroupGuard(h.identity());
        let wrong = ProcessIdentity {
            start_time: h.identity().start_time + 1,
            ..h.identity()
        };
        let err = LocalAttacher::new()
            .attach(AttachTarget::process(wrong))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ExecError::IdentityMismatch { pid, .. } if pid == h.pid()),
            "{err}"
        );
        // The right identity is accepted.
        let (a, _aev) = LocalAttacher::new()
            .attach(AttachTarget::process(h.identity()))
            .await
            .unwrap();
        assert_eq!(a.pid(), h.pid());
        h.kill().await.unwrap();
        within(30, "attached wait", a.wait()).await.unwrap();
    });
}

#[test]
fn attaching_to_a_gone_process_fails() {
    smol::block_on(async {
        let (h, _ev) = LocalLauncher::new()
            .spawn(&Command::new("true"), LaunchOptions::default())
            .unwrap();
        let id = h.identity();
        h.wait().await.unwrap();
        eventually(30, "reaped", || !alive(id.pid)).await;
        let err = LocalAttacher::new()
            .attach(AttachTarget::process(id))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ExecError::NotRunning { .. } | ExecError::IdentityMismatch { .. }
            ),
            "{err}"
        );
    });
}

#[test]
fn attached_stop_ends_the_group_and_the_stream() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        let opts = LaunchOptions::files(&log, &log);
        let (h, ev) = LocalLauncher::new()
            .spawn(
                &sh("trap '' TERM; sleep 300 & echo ready; while :; do sleep 1; done"),
                opts,
            )
            .unwrap();
        let _g = GroupGuard(h.identity());
        let id = h.identity();
        // The launcher forgets it, as a daemon that restarts would.
        drop(ev);
        drop(h);
        eventually(30, "ready in the log", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ready")
        })
        .await;
        let target = AttachTarget {
            identity: id,
            stdout_log: Some(log.clone()),
            stderr_log: Some(log.clone()),
            follow_from: FollowFrom::Start,
            scope: Default::default(),
        };
        let (a, mut aev) = LocalAttacher::new().attach(target).await.unwrap();
        events_until(
            &mut aev,
            30,
            |e| matches!(e, ProcessEvent::Output(l) if l.text() == "ready"),
        )
        .await;
        let status = within(60, "attached stop", a.stop(Duration::from_millis(300)))
            .await
            .unwrap();
        // Our own child (launched above): its status shows unless our reaper was first.
        assert!(
            matches!(status, ExitStatus::Unknown | ExitStatus::Signal(9)),
            "{status}"
        );
        assert!(
            group_members(id.pid).is_empty(),
            "left: {:?}",
            group_members(id.pid)
        );
        let rest = all_events(&mut aev, 30).await;
        assert_eq!(rest.last(), Some(&ProcessEvent::Exited(status)));
        assert!(a.has_exited());
        assert!(matches!(
            a.signal(harness_core::Signal::TERM),
            Err(ExecError::NotRunning { .. })
        ));
    });
}

#[test]
fn resuming_from_persisted_offsets_has_no_gap_and_no_repeat() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.log");
        let err = dir.path().join("err.log");
        let opts = LaunchOptions::files(&out, &err);
        let done = dir.path().join("done");
        let script = format!(
            "i=0; while [ $i -lt 300 ]; do echo o$i; echo e$i >&2; i=$((i+1)); sleep 0.002; done; \
             while [ ! -e '{}' ]; do sleep 0.01; done",
            done.display()
        );
        let (h, mut ev) = LocalLauncher::new().spawn(&sh(&script), opts).unwrap();
        let _g = GroupGuard(h.identity());
        let id = h.identity();
        // The first daemon reads a little, persists its offsets and goes away
        // while the process keeps writing.
        let first = events_until(
            &mut ev,
            30,
            |e| matches!(e, ProcessEvent::Output(l) if l.text() == "o20"),
        )
        .await;
        let offsets = ev.offsets();
        drop(ev);
        drop(h);
        // The next one resumes from the persisted offsets.
        let target = AttachTarget {
            identity: id,
            stdout_log: Some(out.clone()),
            stderr_log: Some(err.clone()),
            follow_from: offsets.into(),
            scope: Default::default(),
        };
        let (_a, mut aev) = LocalAttacher::new().attach(target).await.unwrap();
        let mut second = events_until(
            &mut aev,
            60,
            |e| matches!(e, ProcessEvent::Output(l) if l.text() == "o299"),
        )
        .await;
        std::fs::write(&done, "").unwrap();
        second.extend(all_events(&mut aev, 60).await);
        assert_well_formed(&second);
        let mut got = lines(&first);
        got.extend(lines(&second));
        let outs: Vec<_> = got.iter().filter(|l| l.starts_with('o')).cloned().collect();
        let errs: Vec<_> = got.iter().filter(|l| l.starts_with('e')).cloned().collect();
        let want_o: Vec<_> = (0..300).map(|i| format!("o{i}")).collect();
        let want_e: Vec<_> = (0..300).map(|i| format!("e{i}")).collect();
        assert_eq!(outs, want_o);
        assert_eq!(errs, want_e);
    });
}

#[test]
fn attach_sees_an_exit_caused_elsewhere() {
    smol::block_on(async {
        let (h, _ev) = LocalLauncher::new()
            .spawn(&Command::new("sleep").arg("300"), LaunchOptions::default())
            .unwrap();
        let _g = GroupGuard(h.identity());
        let (a, mut aev) = LocalAttacher::new()
            .attach(AttachTarget::process(h.identity()))
            .await
            .unwrap();
        h.signal(harness_core::Signal::TERM).unwrap();
        let status = within(30, "attached wait", a.wait()).await.unwrap();
        // Our own child: its status shows unless our reaper was first.
        assert!(
            matches!(status, ExitStatus::Unknown | ExitStatus::Signal(15)),
            "{status}"
        );
        assert_eq!(h.wait().await.unwrap(), ExitStatus::Signal(15));
        let events = all_events(&mut aev, 30).await;
        assert_well_formed(&events);
    });
}

#[test]
fn attached_stop_of_a_process_that_leads_no_group_ends_only_it() {
    smol::block_on(async {
        let (h, mut ev) = LocalLauncher::new()
            .spawn(
                &sh("sleep 300 & echo $!; wait; echo after; sleep 300"),
                LaunchOptions::default(),
            )
            .unwrap();
        let _g = GroupGuard(h.identity());
        let first = events_until(&mut ev, 30, |e| matches!(e, ProcessEvent::Output(_))).await;
        let pid: u32 = lines(&first)[0].parse().unwrap();
        let id = ProcessIdentity::of(pid).unwrap();
        let (a, _aev) = LocalAttacher::new()
            .attach(AttachTarget::process(id))
            .await
            .unwrap();
        assert_eq!(
            within(30, "attached stop", a.stop(Duration::from_secs(10)))
                .await
                .unwrap(),
            ExitStatus::Unknown
        );
        assert!(!alive(pid));
        // The shell (leader of the group) goes on.
        events_until(
            &mut ev,
            30,
            |e| matches!(e, ProcessEvent::Output(l) if l.text() == "after"),
        )
        .await;
        assert!(h.try_status().is_none());
        assert_eq!(
            within(60, "stop", h.stop(Duration::from_secs(10)))
                .await
                .unwrap(),
            ExitStatus::Signal(15)
        );
    });
}

#[test]
fn follow_from_end_skips_old_lines_and_truncation_restarts_at_zero() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        let go = dir.path().join("go");
        let done = dir.path().join("done");
        std::fs::write(&log, "old 1\nold 2\n").unwrap();
        let opts = LaunchOptions::files(&log, &log);
        let script = format!(
            "echo a-rather-long-first-line; while [ ! -e '{go}' ]; do sleep 0.01; done; echo b1; \
             while [ ! -e '{done}' ]; do sleep 0.01; done",
            go = go.display(),
            done = done.display()
        );
        let (h, ev) = LocalLauncher::new().spawn(&sh(&script), opts).unwrap();
        let _g = GroupGuard(h.identity());
        drop(ev);
        eventually(30, "first line", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("a-rather-long-first-line")
        })
        .await;
        let target = AttachTarget {
            identity: h.identity(),
            stdout_log: Some(log.clone()),
            stderr_log: None,
            follow_from: FollowFrom::Start,
            scope: Default::default(),
        };
        let (_a, mut aev) = LocalAttacher::new().attach(target.clone()).await.unwrap();
        let first = events_until(
            &mut aev,
            30,
            |e| matches!(e, ProcessEvent::Output(l) if l.text() == "a-rather-long-first-line"),
        )
        .await;
        assert_eq!(
            lines(&first),
            ["old 1", "old 2", "a-rather-long-first-line"]
        );

        // From the end: nothing old.
        let (_a2, mut aev2) = LocalAttacher::new()
            .attach(AttachTarget {
                follow_from: FollowFrom::End,
                scope: Default::default(),
                ..target
            })
            .await
            .unwrap();

        // The log is truncated (rotated by copy-truncate): following restarts at 0.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        std::fs::write(&go, "").unwrap();
        let next = events_until(&mut aev, 30, |e| matches!(e, ProcessEvent::Output(_))).await;
        assert_eq!(lines(&next), ["b1"]);
        let next2 = events_until(&mut aev2, 30, |e| matches!(e, ProcessEvent::Output(_))).await;
        assert_eq!(lines(&next2), ["b1"]);
        std::fs::write(&done, "").unwrap();
        within(30, "exit", h.wait()).await.unwrap();
    });
}

#[test]
fn an_attached_child_of_ours_reports_how_it_ended() {
    smol::block_on(async {
        // A child nobody else reaps: the attacher sees its real status and
        // leaves it for its parent to reap.
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let id = ProcessIdentity::of(child.id()).unwrap();
        let (a, mut aev) = LocalAttacher::new()
            .attach(AttachTarget::process(id))
            .await
            .unwrap();
        let status = within(30, "attached stop", a.stop(Duration::from_secs(10))).await;
        let reaped = child.wait().unwrap();
        assert_eq!(status.unwrap(), ExitStatus::Signal(15));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&reaped),
            Some(15)
        );
        let events = all_events(&mut aev, 30).await;
        assert_eq!(
            events.last(),
            Some(&ProcessEvent::Exited(ExitStatus::Signal(15)))
        );
    });
}
