//! A representative subset, run under tokio: nothing here needs smol.

mod common;

use std::time::Duration;

use command_executor::{
    AttachTarget, Attacher, Command, LaunchOptions, Launcher, LocalAttacher, LocalLauncher,
    ProcessEvent,
};
use common::*;
use harness_core::ExitStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_reads_lines_and_exit_under_tokio() {
    let cmd = Command::new("sh")
        .arg("-c")
        .arg("echo a; echo b >&2; exit 7");
    let (h, mut ev) = LocalLauncher::new()
        .launch(&cmd, LaunchOptions::default())
        .await
        .unwrap();
    let _g = GroupGuard(h.identity());
    let events = all_events(&mut ev, 30).await;
    assert_well_formed(&events);
    let mut got = lines(&events);
    got.sort();
    assert_eq!(got, ["a", "b"]);
    assert_eq!(h.wait().await.unwrap(), ExitStatus::Code(7));
}

#[tokio::test(flavor = "current_thread")]
async fn stop_ends_the_group_under_tokio() {
    let cmd = Command::new("sh")
        .arg("-c")
        .arg("trap '' TERM; sleep 300 & sleep 300 & echo ready; wait");
    let (h, mut ev) = LocalLauncher::new()
        .launch(&cmd, LaunchOptions::default())
        .await
        .unwrap();
    let _g = GroupGuard(h.identity());
    events_until(
        &mut ev,
        30,
        |e| matches!(e, ProcessEvent::Output(l) if l.text() == "ready"),
    )
    .await;
    eventually(30, "grandchildren started", || {
        group_members(h.pid()).len() >= 3
    })
    .await;
    let status = within(60, "stop", h.stop(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::Signal(9));
    assert!(group_members(h.pid()).is_empty());
    let rest = all_events(&mut ev, 30).await;
    assert_eq!(
        rest.last(),
        Some(&ProcessEvent::Exited(ExitStatus::Signal(9)))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn attach_and_stop_under_tokio() {
    let (h, _ev) = LocalLauncher::new()
        .launch(&Command::new("sleep").arg("300"), LaunchOptions::default())
        .await
        .unwrap();
    let _g = GroupGuard(h.identity());
    let (a, mut aev) = LocalAttacher::new()
        .attach(AttachTarget::process(h.identity()))
        .await
        .unwrap();
    let status = within(30, "attached stop", a.stop(Duration::from_secs(5)))
        .await
        .unwrap();
    // Our own child: its status shows unless our reaper was first.
    assert!(
        matches!(status, ExitStatus::Unknown | ExitStatus::Signal(15)),
        "{status}"
    );
    assert_eq!(h.wait().await.unwrap(), ExitStatus::Signal(15));
    let events = all_events(&mut aev, 30).await;
    assert_well_formed(&events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_mode_under_tokio() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let opts = LaunchOptions::files(&log, &log);
    let cmd = Command::new("sh").arg("-c").arg("echo one; echo two >&2");
    let (h, mut ev) = LocalLauncher::new().launch(&cmd, opts).await.unwrap();
    let _g = GroupGuard(h.identity());
    let events = all_events(&mut ev, 30).await;
    assert_well_formed(&events);
    assert_eq!(lines(&events), ["one", "two"]);
    assert_eq!(ev.offsets().stdout, std::fs::metadata(&log).unwrap().len());
}
