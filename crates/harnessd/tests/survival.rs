//! Services outlive the daemon: kill -9 it, they keep running; the next
//! daemon re-attaches (same pids), logs continue with no lost or repeated
//! line, and stop/down work on the re-adopted services.

mod support;

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use harness_core::ServiceName;
use harness_protocol::{
    Client, ErrorCode, LogsParams, ProjectRef, ServicesParams, StateDir, StreamItem, UpParams,
};
use support::*;

const SERVICES: usize = 20;

/// Checks that `lines` are `line 0`, `line 1`, ... with nothing missing or repeated.
fn assert_consecutive(lines: &[String], from: u64) {
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(
            l,
            &format!("line {}", from + k as u64),
            "at index {k} of {lines:?}"
        );
    }
}

async fn all_lines(c: &Client, service: &ServiceName) -> Vec<String> {
    let mut s = c
        .logs(LogsParams {
            services: vec![service.clone()],
            ..LogsParams::default()
        })
        .unwrap();
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        match item.unwrap() {
            StreamItem::Log(l) => out.push(l.line),
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[test]
fn kill_9_daemon_services_survive_and_are_readopted() {
    let mut d = TestDaemon::start();
    let project = write_project(d.dir.path(), "survive", SERVICES, false);
    let mut guard = Pids(Vec::new());

    let before = smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = c
            .up(UpParams {
                project: project.clone(),
                wait: true,
                timeout_ms: Some(30_000),
                ..UpParams::default()
            })
            .await
            .unwrap();
        assert_eq!(st.services.len(), SERVICES);
        pids(&st.services)
    });
    guard.0.extend(before.values().copied());

    // Let output accumulate and the state be persisted, then kill -9.
    let s0 = ServiceName::new("s0").unwrap();
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let until = Instant::now() + DEADLINE;
        while all_lines(&c, &s0).await.len() < 20 {
            assert!(Instant::now() < until, "no output from s0");
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
    });
    std::thread::sleep(Duration::from_millis(1200)); // two persist periods
    d.signal(rustix::process::Signal::KILL);
    d.wait_exit();
    for (name, &pid) in &before {
        assert!(alive(pid), "{name} (pid {pid}) died with the daemon");
    }

    // While no daemon runs, services keep writing.
    std::thread::sleep(Duration::from_millis(300));
    d.spawn(&[]);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = c.status(ServicesParams::default()).await.unwrap();
        assert_eq!(st.len(), 1);
        assert_eq!(
            pids(&st[0].services),
            before,
            "re-adopted with the same pids"
        );
        for s in &st[0].services {
            assert!(s.state.is_alive(), "{}: {}", s.name, s.state);
        }

        // Logs: the whole history, no gap and no repeat across the restart.
        let lines = all_lines(&c, &s0).await;
        assert!(lines.len() >= 20);
        assert_consecutive(&lines, 0);

        // Follow from the last 5 lines: continues seamlessly.
        let mut f = c
            .logs(LogsParams {
                services: vec![s0.clone()],
                follow: true,
                tail: Some(5),
                ..LogsParams::default()
            })
            .unwrap();
        let mut followed = Vec::new();
        while followed.len() < 30 {
            match f.next().await {
                Some(Ok(StreamItem::Log(l))) => followed.push(l.line),
                other => panic!("unexpected {other:?}"),
            }
        }
        let first: u64 = followed[0].trim_start_matches("line ").parse().unwrap();
        assert_consecutive(&followed, first);
        assert!(
            first + 5 >= lines.len() as u64 - 1,
            "tail starts near the end"
        );
        f.cancel().unwrap();
        // Lines already on their way still arrive, in order; then the end.
        loop {
            match f.next().await {
                Some(Ok(StreamItem::Log(l))) => followed.push(l.line),
                Some(Err(e)) => {
                    assert_eq!(e.remote().map(|e| e.code), Some(ErrorCode::Cancelled));
                    break;
                }
                other => panic!("expected cancelled, got {other:?}"),
            }
        }
        assert_consecutive(&followed, first);

        // Stop works on a re-adopted service.
        let st = c
            .stop(ServicesParams {
                services: vec![s0.clone()],
                ..ServicesParams::default()
            })
            .await
            .unwrap();
        assert!(!st.services[0].state.is_alive());
        let until = Instant::now() + DEADLINE;
        while alive(before[&s0]) {
            assert!(Instant::now() < until, "s0 still alive after stop");
            async_io::Timer::after(Duration::from_millis(20)).await;
        }

        // Down stops the rest.
        c.down(ServicesParams::default()).await.unwrap();
        for (name, &pid) in &before {
            let until = Instant::now() + DEADLINE;
            while alive(pid) {
                assert!(Instant::now() < until, "{name} still alive after down");
                async_io::Timer::after(Duration::from_millis(20)).await;
            }
        }
        assert!(
            c.status(ServicesParams::default())
                .await
                .unwrap()
                .is_empty()
        );
    });
}

#[test]
fn sigterm_leaves_services_running_and_config_errors_are_reported() {
    let mut d = TestDaemon::start();
    let project = write_project(d.dir.path(), "survive", SERVICES, false);
    let mut guard = Pids(Vec::new());
    let before = smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        // A broken file is config_invalid with its location, and loses nothing.
        let bad = d.dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "name: bad\nservices:\n  x:\n    type: process\n    bogus: 1\n",
        )
        .unwrap();
        let e = c
            .up(UpParams {
                project: ProjectRef {
                    files: vec![bad],
                    ..ProjectRef::default()
                },
                ..UpParams::default()
            })
            .await
            .unwrap_err();
        let body = e.remote().expect("a daemon error").clone();
        assert_eq!(body.code, ErrorCode::ConfigInvalid);
        assert!(body.message.contains("bad.yaml"), "{}", body.message);

        let st = c
            .up(UpParams {
                project: project.clone(),
                wait: true,
                timeout_ms: Some(30_000),
                ..UpParams::default()
            })
            .await
            .unwrap();
        pids(&st.services)
    });
    guard.0.extend(before.values().copied());
    d.signal(rustix::process::Signal::TERM);
    assert!(d.wait_exit().success());
    for (name, &pid) in &before {
        assert!(alive(pid), "{name} died with the daemon");
    }
    d.spawn(&[]);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = c.status(ServicesParams::default()).await.unwrap();
        assert_eq!(pids(&st[0].services), before);
        c.down(ServicesParams::default()).await.unwrap();
    });
}

#[test]
fn up_after_a_config_change_restarts_only_what_changed() {
    let d = TestDaemon::start();
    let mut guard = Pids(Vec::new());
    let file = d.dir.path().join("change.yaml");
    let yaml = |arg: &str| {
        format!(
            "name: change\nservices:\n  keep:\n    type: process\n    binary: sleep\n    args: ['600']\n  edit:\n    type: process\n    binary: sleep\n    args: ['{arg}']\n"
        )
    };
    std::fs::write(&file, yaml("600")).unwrap();
    let project = ProjectRef {
        files: vec![file.clone()],
        ..ProjectRef::default()
    };
    let up = UpParams {
        project,
        wait: true,
        timeout_ms: Some(30_000),
        ..UpParams::default()
    };
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let first = pids(&c.up(up.clone()).await.unwrap().services);
        guard.0.extend(first.values().copied());
        // The same file again changes nothing.
        assert_eq!(pids(&c.up(up.clone()).await.unwrap().services), first);
        std::fs::write(&file, yaml("601")).unwrap();
        let second = pids(&c.up(up.clone()).await.unwrap().services);
        guard.0.extend(second.values().copied());
        let keep = ServiceName::new("keep").unwrap();
        let edit = ServiceName::new("edit").unwrap();
        assert_eq!(
            second[&keep], first[&keep],
            "unchanged service keeps running"
        );
        assert_ne!(second[&edit], first[&edit], "changed service is restarted");
        assert!(!alive(first[&edit]));
        // The kept service is still managed: down stops it.
        c.down(ServicesParams::default()).await.unwrap();
        let until = Instant::now() + DEADLINE;
        while alive(first[&keep]) {
            assert!(Instant::now() < until, "kept service survived down");
            async_io::Timer::after(Duration::from_millis(20)).await;
        }
    });
}

#[test]
fn an_unreadable_state_file_is_set_aside_not_fatal() {
    let mut d = TestDaemon::start();
    d.signal(rustix::process::Signal::TERM);
    d.wait_exit();
    let state_file = StateDir::new(&d.state).state_file();
    std::fs::write(&state_file, b"{ this is not json").unwrap();
    std::fs::write(
        StateDir::new(&d.state).last_good_state_file(),
        b"{ this is not json either",
    )
    .unwrap();
    d.spawn(&[]);
    let mut aside: Vec<Vec<u8>> = std::fs::read_dir(&d.state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    aside.sort();
    assert_eq!(
        aside,
        [
            b"{ this is not json".to_vec(),
            b"{ this is not json either".to_vec()
        ]
    );
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        assert!(
            c.status(ServicesParams::default())
                .await
                .unwrap()
                .is_empty()
        );
    });
}

#[test]
fn logs_since_and_across_services() {
    let d = TestDaemon::start();
    let project = write_project(d.dir.path(), "since", 2, false);
    let mut guard = Pids(Vec::new());
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = c
            .up(UpParams {
                project,
                wait: true,
                timeout_ms: Some(30_000),
                ..UpParams::default()
            })
            .await
            .unwrap();
        guard.0.extend(st.services.iter().filter_map(|s| s.pid));
        let collect = |since_ms: Option<u64>| {
            let c = c.clone();
            async move {
                let mut s = c
                    .logs(LogsParams {
                        since_ms,
                        ..LogsParams::default()
                    })
                    .unwrap();
                let mut out = Vec::new();
                while let Some(item) = s.next().await {
                    match item.unwrap() {
                        StreamItem::Log(l) => out.push(l),
                        other => panic!("unexpected {other:?}"),
                    }
                }
                out
            }
        };
        // Wait until both services have written a while.
        let until = Instant::now() + DEADLINE;
        loop {
            let all = collect(None).await;
            let per = |n: &str| all.iter().filter(|l| l.service.as_str() == n).count();
            if per("s0") >= 20 && per("s1") >= 20 {
                break;
            }
            assert!(Instant::now() < until, "not enough output");
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
        let all = collect(None).await;
        assert!(
            all.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms),
            "time order"
        );
        for svc in ["s0", "s1"] {
            let lines: Vec<String> = all
                .iter()
                .filter(|l| l.service.as_str() == svc)
                .map(|l| l.line.clone())
                .collect();
            assert_consecutive(&lines, 0);
        }
        let cut = all[all.len() / 2].ts_ms;
        let later = collect(Some(cut)).await;
        assert!(!later.is_empty() && later.len() < all.len() + 100);
        assert!(later.iter().all(|l| l.ts_ms >= cut));
        c.down(ServicesParams::default()).await.unwrap();
    });
}

#[test]
fn metrics_count_services_by_state() {
    let d = TestDaemon::start_with(&["--metrics", "127.0.0.1:0"]);
    let project = write_project(d.dir.path(), "metered", 3, true);
    let mut guard = Pids(Vec::new());
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = c
            .up(UpParams {
                project,
                wait: true,
                timeout_ms: Some(30_000),
                ..UpParams::default()
            })
            .await
            .unwrap();
        guard.0.extend(st.services.iter().filter_map(|s| s.pid));
        let addr = c.daemon_status().await.unwrap().metrics_address.unwrap();
        let until = Instant::now() + DEADLINE;
        loop {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            use std::io::{Read, Write};
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            if body.contains("harnessd_services{project=\"metered\",state=\"running\"} 3") {
                assert!(
                    body.contains(
                        "harnessd_service_restarts{project=\"metered\",service=\"s0\"} 0"
                    ),
                    "{body}"
                );
                break;
            }
            assert!(Instant::now() < until, "no services gauge: {body}");
            async_io::Timer::after(Duration::from_millis(100)).await;
        }
        c.down(ServicesParams::default()).await.unwrap();
    });
}
