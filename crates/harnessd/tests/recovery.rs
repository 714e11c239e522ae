//! Never losing track (ADR 020): a lost or damaged `state.json`, a full disk,
//! a deleted lock file, a shared state directory and the client's
//! environment, each against a real daemon and real processes.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use harness_core::ServiceName;
use harness_protocol::{Client, LogsParams, ServicesParams, StateDir, StreamItem};
use support::disk::{Damage, Tmpfs, fill};
use support::*;

/// Restarts `service` and waits for its new process: its pid.
async fn restarted(c: &Client, service: &ServiceName, old: u32) -> u32 {
    c.restart(ServicesParams {
        services: vec![service.clone()],
        ..ServicesParams::default()
    })
    .await
    .unwrap();
    let until = Instant::now() + DEADLINE;
    loop {
        let st = c.status(ServicesParams::default()).await.unwrap();
        let s = service_status(&st, service.as_str());
        match s.pid {
            Some(pid) if pid != old && s.state.is_alive() => return pid,
            _ => {}
        }
        assert!(Instant::now() < until, "{service} not running again: {s:?}");
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

/// Waits until `cond` holds, failing with `what` after the deadline.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < until, "{what} within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Process group leaders whose environment says they are `project`/`service`.
fn leaders_of(project: &str, service: &str) -> Vec<u32> {
    let want = [
        format!("HARNESS_PROJECT={project}"),
        format!("HARNESS_SERVICE={service}"),
    ];
    let mut out = Vec::new();
    for pid in command_executor::all_pids() {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        let leader = command_executor::process_group_of(pid).ok() == Some(pid);
        if leader && alive(pid) && want.iter().all(|w| vars.contains(&w.as_bytes())) {
            out.push(pid);
        }
    }
    out
}

async fn log_lines(c: &Client, service: &ServiceName) -> usize {
    let mut s = c
        .logs(LogsParams {
            services: vec![service.clone()],
            ..LogsParams::default()
        })
        .unwrap();
    let mut n = 0;
    while let Some(item) = s.next().await {
        if let StreamItem::Log(_) = item.unwrap() {
            n += 1;
        }
    }
    n
}

fn corrupt_copies(state: &Path) -> usize {
    std::fs::read_dir(state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .count()
}

/// Runs two services, kills the daemon with SIGKILL, damages `state.json`
/// (and, with `last_good_too`, its last-good copy), starts a new daemon:
/// it shows the same processes running, their logs, `up` starts nothing
/// twice and `down` stops them.
fn survives(damage: Damage, last_good_too: bool) {
    let mut d = TestDaemon::start();
    let name = format!(
        "rec-{}-{}",
        format!("{damage:?}").to_lowercase(),
        if last_good_too { "both" } else { "one" }
    );
    let project = write_project(d.dir.path(), &name, 2, false);
    let mut guard = Pids(Vec::new());
    let sd = StateDir::new(&d.state);

    let before = smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = up_wait(&c, &project).await;
        pids(&st.services)
    });
    guard.0.extend(before.values().copied());
    let persisted = |p: &Path| {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        before
            .values()
            .all(|pid| text.contains(&format!("\"pid\": {pid}")))
    };
    wait_for("state and last-good copy written", || {
        persisted(&sd.state_file()) && persisted(&sd.last_good_state_file())
    });
    d.signal(rustix::process::Signal::KILL);
    d.wait_exit();

    damage.apply(&sd.state_file());
    if last_good_too {
        damage.apply(&sd.last_good_state_file());
    }
    d.spawn(&[]);
    let damaged_files = match damage {
        Damage::Deleted => 0,
        _ if last_good_too => 2,
        _ => 1,
    };
    assert_eq!(corrupt_copies(&d.state), damaged_files, "moved aside");

    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = c.status(ServicesParams::default()).await.unwrap();
        assert_eq!(st.len(), 1, "{st:?}");
        assert_eq!(pids(&st[0].services), before, "the same processes");
        for s in &st[0].services {
            assert!(s.state.is_alive(), "{}: {}", s.name, s.state);
        }
        let s0 = ServiceName::new("s0").unwrap();
        assert!(log_lines(&c, &s0).await > 0, "the log history is there");

        // `up` again starts nothing twice.
        let st = up_wait(&c, &project).await;
        assert_eq!(pids(&st.services), before);
        for s in before.keys() {
            assert_eq!(leaders_of(&name, s.as_str()).len(), 1, "one {s}");
        }

        c.down(ServicesParams::default()).await.unwrap();
    });
    for (s, &pid) in &before {
        wait_for(&format!("{s} (pid {pid}) stopped by down"), || !alive(pid));
    }
}

/// One test per kind of damage.
macro_rules! damage_tests {
    ($($name:ident: $damage:expr, $last_good_too:expr;)*) => {
        $(
            #[test]
            fn $name() {
                survives($damage, $last_good_too);
            }
        )*
    };
}

damage_tests! {
    a_deleted_state_file_and_copy_lose_no_service: Damage::Deleted, true;
    an_empty_state_file_and_copy_lose_no_service: Damage::Empty, true;
    a_truncated_state_file_and_copy_lose_no_service: Damage::Truncated, true;
    a_garbled_state_file_and_copy_lose_no_service: Damage::Garbage, true;
    a_truncated_state_file_falls_back_to_the_last_good_copy: Damage::Truncated, false;
}

#[test]
fn deleting_the_lock_file_does_not_let_a_second_daemon_in() {
    let d = TestDaemon::start();
    std::fs::remove_file(StateDir::new(&d.state).lock_file()).unwrap();
    let mut second = d.command(&[]).spawn().unwrap();
    let until = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second daemon kept running on the same state directory");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{status}");
    assert!(
        stderr.contains(&format!("pid {}", d.pid())),
        "names the first daemon: {stderr}"
    );
    assert_eq!(StateDir::new(&d.state).read_address().unwrap().pid, d.pid());
}

/// A daemon on a state directory made beforehand with `mode`.
fn daemon_on_existing_dir(mode: u32) -> TestDaemon {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
    TestDaemon {
        child: None,
        dir,
        state,
        env: Vec::new(),
    }
}

#[test]
fn an_existing_state_directory_keeps_its_mode() {
    let mut d = daemon_on_existing_dir(0o755);
    d.spawn(&[]);
    assert_eq!(file_mode(&d.state), 0o755);
    assert_eq!(file_mode(&d.state.join("tls")), 0o700);
}

#[test]
fn a_state_directory_every_user_may_write_is_refused_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let d = daemon_on_existing_dir(0o1777);
    let out = d.command(&[]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("every user may write"), "{stderr}");
    let mode = std::fs::metadata(&d.state).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777);
}

#[test]
fn only_the_variables_the_configuration_uses_are_kept() {
    let mut d = TestDaemon::start();
    let yaml = "name: envkeep\nservices:\n  app:\n    type: process\n    binary: sh\n    \
                args: [-c, 'exec sleep 600']\n    env:\n      GREETING: ${GREETING}\n";
    let mut project = project_file(d.dir.path(), yaml);
    project.env = BTreeMap::from([
        ("GREETING".to_owned(), "hello".to_owned()),
        ("SECRET_TOKEN".to_owned(), "hunter2-secret".to_owned()),
    ]);
    let mut guard = Pids(Vec::new());
    let app = ServiceName::new("app").unwrap();
    let first = smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = up_wait(&c, &project).await;
        pids(&st.services)[&app]
    });
    guard.0.push(first);
    let sd = StateDir::new(&d.state);
    let spec = sd.projects_dir().join("envkeep.json");
    wait_for("state and project reference written", || {
        std::fs::read_to_string(sd.state_file()).is_ok_and(|t| t.contains("GREETING"))
            && std::fs::read_to_string(&spec).is_ok_and(|t| t.contains("GREETING"))
    });
    for f in [sd.state_file(), sd.last_good_state_file(), spec] {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains("SECRET_TOKEN"), "{}: {text}", f.display());
        assert!(!text.contains("hunter2"), "{}: {text}", f.display());
    }

    // A new daemon loads the project with the variable it uses.
    d.signal(rustix::process::Signal::TERM);
    d.wait_exit();
    d.spawn(&[]);
    let second = smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        restarted(&c, &app, first).await
    });
    guard.0.push(second);
    let env = std::fs::read(format!("/proc/{second}/environ")).unwrap();
    let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
    assert!(
        vars.contains(&&b"GREETING=hello"[..]),
        "GREETING after restart"
    );
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        c.down(ServicesParams::default()).await.unwrap();
    });
}

#[test]
fn a_full_disk_loses_no_process_and_is_shown() {
    let mounts = tempfile::tempdir().unwrap();
    let at = mounts.path().join("state");
    let _tmpfs = match Tmpfs::mount(&at, "2m") {
        Ok(t) => t,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: cannot mount a tmpfs ({why})");
            return;
        }
        Err(why) => panic!("cannot mount a tmpfs: {why}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut d = TestDaemon {
        child: None,
        dir,
        state: at.clone(),
        env: Vec::new(),
    };
    d.spawn(&[]);
    let project = write_project(d.dir.path(), "full", 2, true);
    let mut guard = Pids(Vec::new());
    let sd = StateDir::new(&d.state);
    let s0 = ServiceName::new("s0").unwrap();
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = up_wait(&c, &project).await;
        let before = pids(&st.services);
        guard.0.extend(before.values().copied());
        wait_for("state written", || {
            std::fs::read_to_string(sd.state_file())
                .is_ok_and(|t| t.contains(&format!("\"pid\": {}", before[&s0])))
        });

        let filler = at.join("filler");
        fill(&filler);
        let new_pid = restarted(&c, &s0, before[&s0]).await;
        guard.0.push(new_pid);

        let until = Instant::now() + DEADLINE;
        let warning = loop {
            let st = c.status(ServicesParams::default()).await.unwrap();
            if let Some(w) = st[0].warnings.first() {
                break w.clone();
            }
            assert!(Instant::now() < until, "no warning in status: {st:?}");
            async_io::Timer::after(Duration::from_millis(50)).await;
        };
        assert!(warning.contains("cannot save"), "{warning}");
        let info = c.daemon_status().await.unwrap();
        assert_eq!(info.warnings, vec![warning]);
        let on_disk = std::fs::read_to_string(sd.state_file()).unwrap();
        assert!(!on_disk.contains(&format!("\"pid\": {new_pid}")));

        c.down(ServicesParams::default()).await.unwrap();
        for pid in before.values().chain([&new_pid]) {
            let until = Instant::now() + DEADLINE;
            while alive(*pid) {
                assert!(Instant::now() < until, "pid {pid} still runs after down");
                async_io::Timer::after(Duration::from_millis(50)).await;
            }
        }

        std::fs::remove_file(&filler).unwrap();
        let until = Instant::now() + DEADLINE;
        while !c.daemon_status().await.unwrap().warnings.is_empty() {
            assert!(
                Instant::now() < until,
                "the warning stays after space came back"
            );
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
        let state = harnessd::recovery::decode_state(&std::fs::read(sd.state_file()).unwrap())
            .expect("a whole state file");
        assert!(state.projects.is_empty(), "{state:?}");
    });
    d.signal(rustix::process::Signal::TERM);
    d.wait_exit();
}
