//! Launching real processes under smol.

mod common;

use std::time::Duration;

use command_executor::{
    Command, ExecError, LaunchOptions, LocalLauncher, OutputMode, ProcessEvent, ProcessIdentity,
    StdinMode,
};
use common::*;
use harness_core::{ExitStatus, OutputStream};

#[test]
fn started_lines_and_one_exit_last() {
    smol::block_on(async {
        let (h, mut ev) = LocalLauncher::new()
            .spawn(
                &sh("echo out1; echo err1 >&2; echo out2; exit 3"),
                LaunchOptions::default(),
            )
            .unwrap();
        let _g = GroupGuard(h.identity());
        let events = all_events(&mut ev, 30).await;
        assert_well_formed(&events);
        assert_eq!(events[0], ProcessEvent::Started { pid: h.pid() });
        let out: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                ProcessEvent::Output(l) => Some((l.stream, l.text().into_owned())),
                _ => None,
            })
            .collect();
        let stdout: Vec<_> = out
            .iter()
            .filter(|(s, _)| *s == OutputStream::Stdout)
            .map(|(_, t)| t.as_str())
            .collect();
        let stderr: Vec<_> = out
            .iter()
            .filter(|(s, _)| *s == OutputStream::Stderr)
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(stdout, ["out1", "out2"]);
        assert_eq!(stderr, ["err1"]);
        assert_eq!(
            events.last(),
            Some(&ProcessEvent::Exited(ExitStatus::Code(3)))
        );
        assert_eq!(h.wait().await.unwrap(), ExitStatus::Code(3));
        // The stream stays ended.
        assert!(futures_lite::StreamExt::next(&mut ev).await.is_none());
    });
}

#[test]
fn env_dir_and_removal_apply() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let cmd = sh(r#"echo "$HARNESS_T_A|${HOME-unset}|$(pwd)""#)
            .env("HARNESS_T_A", "a b$c")
            .env_remove("HOME")
            .current_dir(dir.path());
        let (_h, mut ev) = LocalLauncher::new()
            .spawn(&cmd, LaunchOptions::default())
            .unwrap();
        let events = all_events(&mut ev, 30).await;
        let want = format!(
            "a b$c|unset|{}",
            dir.path().canonicalize().unwrap().display()
        );
        assert_eq!(lines(&events), [want]);
    });
}

#[test]
fn stop_ends_the_whole_group_with_grandchildren() {
    smol::block_on(async {
        let (h, mut ev) = LocalLauncher::new()
            .spawn(
                &sh("sleep 300 & sleep 300 & (sleep 300; true) & echo ready; wait"),
                LaunchOptions::default(),
            )
            .unwrap();
        let _g = GroupGuard(h.identity());
        events_until(
            &mut ev,
            30,
            |e| matches!(e, ProcessEvent::Output(l) if l.text() == "ready"),
        )
        .await;
        eventually(30, "grandchildren started", || {
            group_members(h.pid()).len() >= 4
        })
        .await;
        let members = group_members(h.pid());
        let status = within(60, "stop", h.stop(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(status, ExitStatus::Signal(15));
        assert!(
            group_members(h.pid()).is_empty(),
            "group still has {:?}",
            group_members(h.pid())
        );
        for pid in members {
            assert!(!alive(pid), "process {pid} survived stop");
        }
        let rest = all_events(&mut ev, 30).await;
        assert_eq!(
            rest.last(),
            Some(&ProcessEvent::Exited(ExitStatus::Signal(15)))
        );
    });
}

#[test]
fn stop_escalates_to_sigkill_when_term_is_ignored() {
    smol::block_on(async {
        let (h, mut ev) = LocalLauncher::new()
            .spawn(
                &sh("trap '' TERM; sleep 300 & echo ready; while :; do sleep 1; done"),
                LaunchOptions::default(),
            )
            .unwrap();
        let _g = GroupGuard(h.identity());
        events_until(
            &mut ev,
            30,
            |e| matches!(e, ProcessEvent::Output(l) if l.text() == "ready"),
        )
        .await;
        let status = within(60, "stop", h.stop(Duration::from_millis(300)))
            .await
            .unwrap();
        assert_eq!(status, ExitStatus::Signal(9));
        assert!(group_members(h.pid()).is_empty());
        let rest = all_events(&mut ev, 30).await;
        assert_eq!(
            rest.last(),
            Some(&ProcessEvent::Exited(ExitStatus::Signal(9)))
        );
    });
}

#[test]
fn kill_yields_one_exit_event() {
    smol::block_on(async {
        let (h, mut ev) = LocalLauncher::new()
            .spawn(&Command::new("sleep").arg("300"), LaunchOptions::default())
            .unwrap();
        let _g = GroupGuard(h.identity());
        assert_eq!(
            within(30, "kill", h.kill()).await.unwrap(),
            ExitStatus::Signal(9)
        );
        let events = all_events(&mut ev, 30).await;
        assert_well_formed(&events);
        assert_eq!(
            events.last(),
            Some(&ProcessEvent::Exited(ExitStatus::Signal(9)))
        );
        // A second kill or stop of a finished process is fine.
        assert_eq!(
            h.stop(Duration::from_secs(1)).await.unwrap(),
            ExitStatus::Signal(9)
        );
        assert!(matches!(
            h.signal(harness_core::Signal::HUP),
            Err(ExecError::NotRunning { .. })
        ));
    });
}

#[test]
fn ten_million_unread_lines_never_block_the_child() {
    smol::block_on(async {
        let opts = LaunchOptions {
            buffer_events: 1000,
            ..LaunchOptions::default()
        };
        let (h, mut ev) = LocalLauncher::new()
            .spawn(&Command::new("seq").arg("10000000"), opts)
            .unwrap();
        let _g = GroupGuard(h.identity());
        // Nobody reads the stream while the child prints.
        assert_eq!(
            within(300, "seq to finish", h.wait()).await.unwrap(),
            ExitStatus::Code(0)
        );
        let events = all_events(&mut ev, 60).await;
        assert_well_formed(&events);
        let delivered = events
            .iter()
            .filter(|e| matches!(e, ProcessEvent::Output(_)))
            .count() as u64;
        let dropped: u64 = events
            .iter()
            .map(|e| match e {
                ProcessEvent::Dropped { lines } => *lines,
                _ => 0,
            })
            .sum();
        assert!(dropped > 0, "nothing was dropped");
        // The queue holds at most 1000 lines at any time. When `seq` exits, what
        // it wrote into the pipe (at most 64 KiB: 8192 lines of `9999999\n`)
        // may still be unread by the pump, and reaches the queue as this test
        // takes lines out: so the bound is the queue plus one pipe buffer.
        let bound = 1000 + 65_536 / 8 + 1;
        assert!(
            delivered <= bound,
            "queue was not bounded: {delivered} lines delivered (bound {bound})"
        );
        assert_eq!(delivered + dropped, 10_000_000);
        // What was delivered is the beginning, in order.
        assert_eq!(lines(&events[..3]), ["1", "2"]);
    });
}

#[test]
fn non_utf8_bytes_are_kept_and_long_lines_truncated() {
    smol::block_on(async {
        let opts = LaunchOptions {
            max_line_bytes: 1000,
            ..LaunchOptions::default()
        };
        let script = r"printf 'ok\377\376\n'; head -c 100000 /dev/zero | tr '\0' x; printf '\nafter\nno-newline'";
        let (_h, mut ev) = LocalLauncher::new().spawn(&sh(script), opts).unwrap();
        let events = all_events(&mut ev, 30).await;
        let out: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                ProcessEvent::Output(l) => Some(l.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(out[0].bytes, b"ok\xff\xfe");
        assert!(!out[0].truncated);
        assert_eq!(out[1].bytes, vec![b'x'; 1000]);
        assert!(out[1].truncated);
        assert_eq!(out[2].bytes, b"after");
        assert_eq!(out[3].bytes, b"no-newline");
    });
}

#[test]
fn stdin_pipe_round_trip() {
    smol::block_on(async {
        let (h, mut ev) = LocalLauncher::new()
            .spawn(
                &Command::new("cat").stdin(StdinMode::Piped),
                LaunchOptions::default(),
            )
            .unwrap();
        let _g = GroupGuard(h.identity());
        h.write_stdin(b"hello\nworld\n").await.unwrap();
        h.close_stdin().await.unwrap();
        h.close_stdin().await.unwrap();
        let events = all_events(&mut ev, 30).await;
        assert_eq!(lines(&events), ["hello", "world"]);
        assert_eq!(
            events.last(),
            Some(&ProcessEvent::Exited(ExitStatus::Code(0)))
        );
        assert!(matches!(
            h.write_stdin(b"x").await,
            Err(ExecError::NoStdin { .. })
        ));

        let (h, _ev) = LocalLauncher::new()
            .spawn(&Command::new("true"), LaunchOptions::default())
            .unwrap();
        assert!(matches!(
            h.write_stdin(b"x").await,
            Err(ExecError::NoStdin { .. })
        ));
    });
}

#[test]
fn missing_program_is_an_error_naming_it() {
    let err = LocalLauncher::new()
        .spawn(
            &Command::new("harness-no-such-program-xyz"),
            LaunchOptions::default(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::Spawn { program, .. } if program == "harness-no-such-program-xyz")
    );
    assert!(err.to_string().contains("harness-no-such-program-xyz"));
}

#[test]
fn files_mode_appends_follows_and_reports_offsets() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.log");
        let err = dir.path().join("err.log");
        std::fs::write(&out, "old line\n").unwrap();
        let opts = LaunchOptions::files(&out, &err);
        let (h, mut ev) = LocalLauncher::new()
            .spawn(&sh("echo one; echo two >&2; sleep 0.2; echo three"), opts)
            .unwrap();
        let _g = GroupGuard(h.identity());
        let events = all_events(&mut ev, 30).await;
        assert_well_formed(&events);
        let mut got = lines(&events);
        got.sort();
        assert_eq!(got, ["one", "three", "two"]);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "old line\none\nthree\n"
        );
        assert_eq!(std::fs::read_to_string(&err).unwrap(), "two\n");
        let offsets = ev.offsets();
        assert_eq!(offsets.stdout, std::fs::metadata(&out).unwrap().len());
        assert_eq!(offsets.stderr, std::fs::metadata(&err).unwrap().len());
    });
}

#[test]
fn files_mode_process_outlives_its_handle_and_stream() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("both.log");
        let opts = LaunchOptions::files(&log, &log);
        let (h, ev) = LocalLauncher::new()
            .spawn(
                &sh("i=0; while [ $i -lt 200 ]; do echo $i; i=$((i+1)); sleep 0.01; done"),
                opts,
            )
            .unwrap();
        let _g = GroupGuard(h.identity());
        let pid = h.pid();
        drop(ev);
        drop(h);
        // It keeps running and writing after both are gone.
        eventually(60, "the process to write its last line", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .ends_with("199\n")
        })
        .await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 200);
        eventually(30, "the process to be reaped", || !alive(pid)).await;
    });
}

#[test]
fn fifty_processes_at_once_each_deliver_everything() {
    smol::block_on(async {
        let mut running = Vec::new();
        for i in 0..50 {
            let cmd = sh(&format!("seq 1000; echo done{i} >&2"));
            let (h, ev) = LocalLauncher::new()
                .spawn(&cmd, LaunchOptions::default())
                .unwrap();
            running.push((GroupGuard(h.identity()), h, ev, i));
        }
        for (_g, h, mut ev, i) in running {
            let events = all_events(&mut ev, 60).await;
            assert_well_formed(&events);
            let got = lines(&events);
            assert_eq!(got.len(), 1001);
            assert_eq!(
                got.iter()
                    .filter(|l| l.starts_with("done"))
                    .collect::<Vec<_>>(),
                [&format!("done{i}")]
            );
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, ProcessEvent::Dropped { .. }))
            );
            assert_eq!(h.wait().await.unwrap(), ExitStatus::Code(0));
        }
    });
}

#[test]
fn exit_is_reported_while_a_grandchild_still_holds_the_pipes() {
    smol::block_on(async {
        let (h, mut ev) = LocalLauncher::new()
            .spawn(&sh("sleep 300 & echo bye"), LaunchOptions::default())
            .unwrap();
        let _g = GroupGuard(h.identity());
        let events = all_events(&mut ev, 30).await;
        assert_well_formed(&events);
        assert_eq!(lines(&events), ["bye"]);
        assert_eq!(
            events.last(),
            Some(&ProcessEvent::Exited(ExitStatus::Code(0)))
        );
        // The grandchild is still in the group; stop takes it down too.
        assert!(!group_members(h.pid()).is_empty());
        assert_eq!(
            within(60, "stop", h.stop(Duration::from_secs(10)))
                .await
                .unwrap(),
            ExitStatus::Code(0)
        );
        assert!(group_members(h.pid()).is_empty());
    });
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let err = LocalLauncher::new()
        .spawn(
            &Command::new("echo").arg("nul\0byte"),
            LaunchOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, ExecError::Spawn { .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/out.log");
    let opts = LaunchOptions::files(&missing, &missing);
    let err = LocalLauncher::new()
        .spawn(&Command::new("true"), opts)
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::LogFile { path, .. } if *path == missing),
        "{err}"
    );
    let opts = LaunchOptions {
        max_line_bytes: 0,
        buffer_events: 0,
        ..LaunchOptions::default()
    };
    smol::block_on(async {
        let (_h, mut ev) = LocalLauncher::new()
            .spawn(&sh("echo abc; echo def"), opts)
            .unwrap();
        let events = all_events(&mut ev, 30).await;
        assert_well_formed(&events);
    });
}

#[test]
fn layered_launcher_wraps_before_launching() {
    use command_executor::{Launcher, LayeredLauncher, LocalLayer};
    smol::block_on(async {
        let launcher = LayeredLauncher::local(LocalLayer::new().env("HARNESS_T_L", "from layer"));
        let (_h, mut ev) = launcher
            .launch(&sh("echo \"$HARNESS_T_L\""), LaunchOptions::default())
            .await
            .unwrap();
        let events = all_events(&mut ev, 30).await;
        assert_eq!(lines(&events), ["from layer"]);
    });
}

#[test]
fn stop_wakes_a_stopped_process_so_it_sees_sigterm() {
    smol::block_on(async {
        let (h, mut ev) = LocalLauncher::new()
            .spawn(
                &sh("echo ready; kill -STOP $$; echo continued"),
                LaunchOptions::default(),
            )
            .unwrap();
        let _g = GroupGuard(h.identity());
        events_until(
            &mut ev,
            30,
            |e| matches!(e, ProcessEvent::Output(l) if l.text() == "ready"),
        )
        .await;
        eventually(30, "the shell to stop itself", || {
            std::fs::read_to_string(format!("/proc/{}/stat", h.pid()))
                .map(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
                })
                .unwrap_or(false)
        })
        .await;
        // SIGTERM alone would wait for SIGCONT; the grace is long so a SIGKILL
        // would show as signal 9.
        let status = within(60, "stop", h.stop(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(status, ExitStatus::Signal(15));
    });
}

#[test]
fn runs_as_another_user_and_groups_when_privileged() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: switching user needs root");
        return;
    }
    smol::block_on(async {
        let report = "echo $(id -u):$(id -g):$(id -G)";
        for (cmd, want) in [
            // Without groups: root's supplementary groups are dropped.
            (sh(report).user(65534).group(65534), "65534:65534:65534"),
            (
                sh(report)
                    .user(65534)
                    .group(65534)
                    .groups([65534, 4242, 4343]),
                "65534:65534:65534 4242 4343",
            ),
        ] {
            let (_h, mut ev) = LocalLauncher::new()
                .spawn(&cmd, LaunchOptions::default())
                .unwrap();
            let events = all_events(&mut ev, 30).await;
            assert_eq!(lines(&events), [want]);
        }
    });
}

#[test]
fn files_mode_never_drops_the_file_is_the_buffer() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let opts = LaunchOptions {
            output: OutputMode::Files {
                stdout: log.clone(),
                stderr: log.clone(),
            },
            buffer_events: 100,
            ..LaunchOptions::default()
        };
        let (h, mut ev) = LocalLauncher::new()
            .spawn(&Command::new("seq").arg("100000"), opts)
            .unwrap();
        let _g = GroupGuard(h.identity());
        // Nobody reads while it writes.
        assert_eq!(
            within(60, "seq", h.wait()).await.unwrap(),
            ExitStatus::Code(0)
        );
        let events = all_events(&mut ev, 120).await;
        assert_well_formed(&events);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, ProcessEvent::Dropped { .. }))
        );
        let got = lines(&events);
        assert_eq!(got.len(), 100_000);
        assert_eq!(got.first().map(String::as_str), Some("1"));
        assert_eq!(got.last().map(String::as_str), Some("100000"));
    });
}

#[test]
fn stop_empties_a_group_that_keeps_forking() {
    smol::block_on(async {
        let (h, mut ev) = LocalLauncher::new()
            .spawn(
                &sh("trap '' TERM; echo ready; while :; do sleep 100 & sleep 0.01; done"),
                LaunchOptions::default(),
            )
            .unwrap();
        let _g = GroupGuard(h.identity());
        events_until(
            &mut ev,
            30,
            |e| matches!(e, ProcessEvent::Output(l) if l.text() == "ready"),
        )
        .await;
        eventually(30, "a few children", || group_members(h.pid()).len() >= 5).await;
        let status = within(60, "stop", h.stop(Duration::from_millis(200)))
            .await
            .unwrap();
        assert_eq!(status, ExitStatus::Signal(9));
        assert!(
            group_members(h.pid()).is_empty(),
            "left: {:?}",
            group_members(h.pid())
        );
    });
}

#[test]
fn identity_first_asked_after_the_exit_is_still_the_processs_own() {
    smol::block_on(async {
        let (h, mut ev) = LocalLauncher::new()
            .spawn(&Command::new("sleep").arg("300"), LaunchOptions::default())
            .unwrap();
        // Read here, not through the handle: the handle is first asked below,
        // after the process was reaped.
        let seen = ProcessIdentity::of(h.pid()).unwrap();
        let _g = GroupGuard(seen);
        assert_ne!(seen.start_time, 0);
        h.signal_leader(harness_core::Signal::KILL).unwrap();
        let events = all_events(&mut ev, 30).await;
        assert_well_formed(&events);
        assert_eq!(
            within(30, "wait", h.wait()).await.unwrap(),
            ExitStatus::Signal(9)
        );
        assert_eq!(h.identity(), seen);
        // Its group is gone: signals are refused, not sent to a stranger.
        assert!(matches!(
            h.signal(harness_core::Signal::TERM),
            Err(ExecError::NotRunning { .. })
        ));
    });
}

#[test]
fn many_processes_at_once_each_end_with_their_own_status() {
    smol::block_on(async {
        let launcher = LocalLauncher::new();
        let mut running = Vec::new();
        for i in 0..100 {
            let (h, ev) = launcher
                .spawn(
                    &sh(&format!("echo {i}; echo e{i} >&2; exit {}", i % 7)),
                    LaunchOptions::default(),
                )
                .unwrap();
            let g = GroupGuard(h.identity());
            running.push((i, h, ev, g));
        }
        for (i, h, mut ev, _g) in running {
            let events = all_events(&mut ev, 60).await;
            assert_well_formed(&events);
            let mut got = lines(&events);
            got.sort();
            assert_eq!(got, [format!("{i}"), format!("e{i}")]);
            assert_eq!(
                events.last(),
                Some(&ProcessEvent::Exited(ExitStatus::Code(i % 7)))
            );
            assert_eq!(h.try_status(), Some(ExitStatus::Code(i % 7)));
        }
    });
}

/// Paths of the files this process holds open.
fn open_files() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .collect()
}

/// A quiet process's log files are not held open between changes, and a
/// change is delivered when it happens (an inotify watch on their directory,
/// not a poll).
#[test]
fn quiet_log_files_are_not_held_open_and_changes_arrive() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("stdout.log");
        let err = dir.path().join("stderr.log");
        let (h, mut ev) = LocalLauncher::new()
            .spawn(
                &sh("echo first; exec sleep 300"),
                LaunchOptions::files(&out, &err),
            )
            .unwrap();
        let _g = GroupGuard(h.identity());
        events_until(
            &mut ev,
            30,
            |e| matches!(e, ProcessEvent::Output(l) if l.text() == "first"),
        )
        .await;
        eventually(30, "log files let go once read", || {
            !open_files().iter().any(|p| p == &out || p == &err)
        })
        .await;
        // Another writer appends: the line is read without the process writing.
        let mut f = std::fs::OpenOptions::new().append(true).open(&err).unwrap();
        std::io::Write::write_all(&mut f, b"appended\n").unwrap();
        drop(f);
        events_until(
            &mut ev,
            30,
            |e| matches!(e, ProcessEvent::Output(l) if l.text() == "appended" && l.stream == OutputStream::Stderr),
        )
        .await;
        eventually(30, "let go again", || {
            !open_files().iter().any(|p| p == &out || p == &err)
        })
        .await;
    });
}
