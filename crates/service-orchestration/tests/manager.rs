//! ServiceManager with real local processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_lite::StreamExt;
use harness_config::{Backoff, Check, Condition, LogPattern, RestartMode};
use harness_core::{ServiceState, Signal};
use service_orchestration::{ManagerError, ManagerEvent, ManagerOptions, ServiceManager};

const LONG: Duration = Duration::from_secs(30);

/// db (HTTP) <- api (HTTP, reads db) <- front (reads api): each starts only once
/// the one below answers HTTP; `${svc.port}` and HARNESS_* are injected.
#[test]
fn three_level_graph_gated_on_http_readiness() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let [db_port, api_port] = free_ports::<2>();
        std::fs::create_dir_all(d.join("db-www")).unwrap();
        std::fs::write(d.join("db-www/index.html"), "db-ok\n").unwrap();
        std::fs::create_dir_all(d.join("api-www")).unwrap();

        // db takes a moment before it listens: dependents must wait for real health.
        let mut db = sh(
            "db",
            d,
            &format!("sleep 0.5; exec busybox httpd -f -p 127.0.0.1:{db_port} -h db-www"),
        );
        db.readiness = Some(probe(
            Check::Http {
                url: format!("http://127.0.0.1:{db_port}/"),
                expected_status: None,
            },
            3,
        ));
        // api fetches from db (fails if db is not serving), then serves.
        let mut api = sh(
            "api",
            d,
            "wget -q -O api-www/index.html http://127.0.0.1:${db.port}/ || exit 9; \
             echo \"$HARNESS_PROJECT/$HARNESS_SERVICE\" >> api-www/index.html; \
             exec busybox httpd -f -p 127.0.0.1:$API_PORT -h api-www",
        );
        api.env.insert("API_PORT".into(), api_port.to_string());
        api.readiness = Some(probe(
            Check::Http {
                url: format!("http://127.0.0.1:{api_port}/index.html"),
                expected_status: Some(200),
            },
            3,
        ));
        depends(&mut api, "db", Condition::Healthy);
        let mut front = sh(
            "front",
            d,
            "wget -q -O front.out http://127.0.0.1:${api.port}/index.html || exit 9; exec sleep 60",
        );
        depends(&mut front, "api", Condition::Healthy);

        let m = manager(project(vec![db, api, front]), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        m.start(&[name("front")]).unwrap();
        m.wait_ready(&[name("front")], LONG).await.unwrap();
        eventually("front fetched api", LONG, || d.join("front.out").exists()).await;
        eventually("front.out written", LONG, || {
            std::fs::read_to_string(d.join("front.out")).is_ok_and(|s| s.contains("test/api"))
        })
        .await;
        let out = std::fs::read_to_string(d.join("front.out")).unwrap();
        assert_eq!(out, "db-ok\ntest/api\n");
        for s in m.status() {
            let want = if s.name.as_str() == "front" {
                ServiceState::Running
            } else {
                ServiceState::Healthy
            };
            assert_eq!(s.state, want, "{}", s.name);
            assert!(s.pid.is_some());
        }
        m.stop_all().await;
        for s in m.status() {
            assert_eq!(s.state, ServiceState::Stopped);
        }
    });
}

/// A crash loop: restart delays grow by the multiplier; max_restarts ends it
/// with a reason.
#[test]
fn crash_loop_backs_off_then_gives_up() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut svc = sh("crashy", d, "date +%s%N >> starts; exit 1");
        svc.restart.mode = RestartMode::OnFailure;
        svc.restart.backoff = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
        };
        svc.restart.max_restarts = Some(4);
        let m = manager(project(vec![svc]), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        m.start(&[name("crashy")]).unwrap();
        let reason = failure_reason(&m, "crashy", LONG).await;
        assert!(
            reason.contains("exited with code 1") && reason.contains("4 restarts"),
            "{reason}"
        );
        assert_eq!(m.status()[0].restarts, 4);
        let stamps: Vec<u128> = std::fs::read_to_string(d.join("starts"))
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(stamps.len(), 5, "the first run and 4 restarts");
        let gaps: Vec<f64> = stamps
            .windows(2)
            .map(|w| (w[1] - w[0]) as f64 / 1e6)
            .collect();
        for (i, gap) in gaps.iter().enumerate() {
            let configured = 200.0 * 2f64.powi(i as i32);
            assert!(
                *gap >= configured * 0.95,
                "gap {i} = {gap} ms < {configured} ms: {gaps:?}"
            );
        }
        for w in gaps.windows(2) {
            let ratio = w[1] / w[0];
            assert!((1.3..=3.0).contains(&ratio), "gaps do not double: {gaps:?}");
        }
    });
}

/// A failing liveness check restarts the service.
#[test]
fn liveness_failure_restarts_the_service() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // First run: healthy for a moment, then its liveness marker disappears.
        // Later runs keep the marker.
        let mut svc = sh(
            "flaky",
            d,
            "echo run >> runs; touch alive; \
             if [ $(wc -l < runs) -eq 1 ]; then sleep 0.5; rm alive; fi; exec sleep 60",
        );
        svc.restart.mode = RestartMode::OnFailure;
        svc.restart.backoff.initial = Duration::from_millis(100);
        svc.restart.backoff.jitter = 0.0;
        svc.liveness = Some(probe(
            Check::Exec {
                command: "test".into(),
                args: vec!["-f".into(), "alive".into()],
            },
            2,
        ));
        let m = manager(project(vec![svc]), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        let mut events = m.subscribe();
        m.start(&[name("flaky")]).unwrap();
        eventually("a second run", LONG, || {
            std::fs::read_to_string(d.join("runs")).is_ok_and(|s| s.lines().count() >= 2)
        })
        .await;
        m.wait_ready(&[name("flaky")], LONG).await.unwrap();
        let st = &m.status()[0];
        assert_eq!(st.restarts, 1);
        assert_eq!(st.state, ServiceState::Running);
        // The event stream told the story: unhealthy liveness, stopping, restarting.
        let mut seen = Vec::new();
        while let Some(Some(ev)) =
            futures_lite::future::or(async { Some(events.next().await) }, async {
                async_io::Timer::after(Duration::from_millis(200)).await;
                None
            })
            .await
        {
            if let ManagerEvent::State { state, .. } = ev {
                seen.push(state.label());
            }
        }
        assert!(
            seen.windows(2).any(|w| w == ["stopping", "restarting"]),
            "{seen:?}"
        );
        m.stop_all().await;
    });
}

/// A job that fails fails its dependents, naming it; the dependent never runs.
#[test]
fn failing_job_fails_its_dependents() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut migrate = sh("migrate", d, "echo migrating; exit 3");
        migrate.job = true;
        let mut api = sh("api", d, "touch api-ran; exec sleep 60");
        depends(&mut api, "migrate", Condition::CompletedSuccessfully);
        let mut web = sh("web", d, "touch web-ran; exec sleep 60");
        depends(&mut web, "api", Condition::Started);
        let m = manager(project(vec![migrate, api, web]), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        m.start(&[name("web")]).unwrap();
        let err = m.wait_ready(&[name("web")], LONG).await.unwrap_err();
        let ManagerError::NotReady { service, reason } = err else {
            panic!("unexpected error {err}")
        };
        assert_eq!(service.as_str(), "web");
        assert!(reason.contains("`api`"), "{reason}");
        let Some(ServiceState::Failed { reason }) = m.state("api") else {
            panic!("api: {:?}", m.state("api"))
        };
        assert!(
            reason.contains("`migrate`") && reason.contains("exited with code 3"),
            "{reason}"
        );
        assert!(!d.join("api-ran").exists() && !d.join("web-ran").exists());
    });
}

/// A job that succeeds lets its dependent start.
#[test]
fn successful_job_gates_its_dependent() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut migrate = sh("migrate", d, "sleep 0.3; touch migrated");
        migrate.job = true;
        let mut api = sh("api", d, "test -f migrated || exit 7; exec sleep 60");
        depends(&mut api, "migrate", Condition::CompletedSuccessfully);
        let m = manager(project(vec![migrate, api]), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        m.start(&[name("api")]).unwrap();
        m.wait_ready(&[name("api"), name("migrate")], LONG)
            .await
            .unwrap();
        assert_eq!(m.state("migrate"), Some(ServiceState::Completed));
        assert_eq!(m.state("api"), Some(ServiceState::Running));
        m.stop_all().await;
    });
}

/// A service that never becomes ready fails at its startup timeout and its
/// dependents fail naming it: no hang.
#[test]
fn startup_timeout_fails_the_service_and_its_dependents() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut slow = sh("slow", d, "exec sleep 60");
        slow.readiness = Some(probe(
            Check::Tcp {
                host: None,
                port: free_port(),
            },
            1000,
        ));
        slow.startup_timeout = Some(Duration::from_millis(800));
        let mut app = sh("app", d, "exec sleep 60");
        depends(&mut app, "slow", Condition::Healthy);
        let m = manager(project(vec![slow, app]), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        m.start(&[name("app")]).unwrap();
        eventually("slow has a pid", LONG, || m.status()[1].pid.is_some()).await;
        let pid = m.status()[1].pid.unwrap();
        let err = m.wait_ready(&[name("app")], LONG).await.unwrap_err();
        assert!(err.to_string().contains("`slow`"), "{err}");
        assert!(err.to_string().contains("not healthy within"), "{err}");
        eventually("slow failed", LONG, || {
            matches!(m.state("slow"), Some(ServiceState::Failed { .. }))
        })
        .await;
        assert!(
            group_members(pid).is_empty(),
            "the timed-out service was stopped"
        );
    });
}

/// Dependents are stopped before their dependencies, each with its own signal.
#[test]
fn stop_order_is_reverse_dependency_order() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let script = "trap 'echo $HARNESS_SERVICE >> order; exit 0' TERM INT; \
                      echo up >> ready-$HARNESS_SERVICE; while :; do sleep 0.05; done";
        let a = sh("a", d, script);
        let mut b = sh("b", d, script);
        depends(&mut b, "a", Condition::Started);
        let mut c = sh("c", d, script);
        depends(&mut c, "b", Condition::Started);
        c.shutdown.signal = Signal::INT;
        let m = manager(project(vec![a, b, c]), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        m.start(&[name("c")]).unwrap();
        m.wait_ready(&[name("c")], LONG).await.unwrap();
        eventually("all three trapped", LONG, || {
            ["a", "b", "c"]
                .iter()
                .all(|s| d.join(format!("ready-{s}")).exists())
        })
        .await;
        let pids: Vec<u32> = m.status().iter().map(|s| s.pid.unwrap()).collect();
        m.stop(&[name("a")]).await.unwrap();
        let order = std::fs::read_to_string(d.join("order")).unwrap();
        assert_eq!(order, "c\nb\na\n");
        for pid in pids {
            assert!(group_members(pid).is_empty(), "group {pid} left behind");
        }
    });
}

/// Stop reaches the whole process group, escalating to SIGKILL when the
/// signal is ignored: nothing is left in /proc.
#[test]
fn no_process_left_after_stop() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut svc = sh(
            "stubborn",
            d,
            "trap '' TERM; sleep 100 & sleep 100 & touch started; wait",
        );
        svc.shutdown.timeout = Duration::from_millis(500);
        let m = manager(project(vec![svc]), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        m.start(&[name("stubborn")]).unwrap();
        m.wait_ready(&[name("stubborn")], LONG).await.unwrap();
        eventually("children started", LONG, || d.join("started").exists()).await;
        let pid = m.status()[0].pid.unwrap();
        eventually("three members", LONG, || group_members(pid).len() >= 3).await;
        m.stop_all().await;
        assert!(group_members(pid).is_empty(), "{:?}", group_members(pid));
        assert_eq!(m.state("stubborn"), Some(ServiceState::Stopped));
    });
}

/// A log-line condition gates a dependent; output reaches subscribers.
#[test]
fn log_line_condition_and_output_events() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let db = sh(
            "db",
            d,
            "echo booting; sleep 0.3; echo 'ready to accept connections'; exec sleep 60",
        );
        let mut app = sh("app", d, "exec sleep 60");
        depends(
            &mut app,
            "db",
            Condition::LogReady {
                pattern: LogPattern::new("ready to accept").unwrap(),
            },
        );
        let m = manager(project(vec![app, db]), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        let mut events = m.subscribe();
        m.start(&[name("app")]).unwrap();
        m.wait_ready(&[name("app")], LONG).await.unwrap();
        let mut lines = Vec::new();
        let mut app_started_after_ready = false;
        let deadline = Instant::now() + LONG;
        while Instant::now() < deadline {
            match events.next().await.unwrap() {
                ManagerEvent::Output { service, line, .. } if service.as_str() == "db" => {
                    lines.push(line.text().into_owned())
                }
                ManagerEvent::State { service, state }
                    if service.as_str() == "app" && state == ServiceState::Starting =>
                {
                    app_started_after_ready = lines.iter().any(|l| l.contains("ready to accept"));
                    break;
                }
                _ => {}
            }
        }
        assert!(app_started_after_ready, "{lines:?}");
        m.stop_all().await;
    });
}

/// A subscriber that does not read lags (and is told by how much) without
/// slowing the service down.
#[test]
fn slow_subscriber_lags_and_is_told() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut job = sh(
            "chatty",
            d,
            "i=0; while [ $i -lt 500 ]; do echo line $i; i=$((i+1)); done",
        );
        job.job = true;
        let mut opts = ManagerOptions::new(smol_spawner());
        opts.event_capacity = 16;
        let m = ServiceManager::new(project(vec![job]), opts).unwrap();
        let _guard = StopOnDrop(m.clone());
        let mut slow = m.subscribe();
        m.start(&[name("chatty")]).unwrap();
        m.wait_ready(&[name("chatty")], LONG).await.unwrap();
        let mut missed = 0;
        let mut got = 0;
        while let Some(Some(ev)) =
            futures_lite::future::or(async { Some(slow.next().await) }, async {
                async_io::Timer::after(Duration::from_millis(300)).await;
                None
            })
            .await
        {
            match ev {
                ManagerEvent::Lagged { missed: n } => missed += n,
                _ => got += 1,
            }
        }
        assert!(
            missed > 0,
            "a reader that never kept up must be told it lagged"
        );
        assert!(got <= 16 + 1, "at most the buffer was kept: {got}");
    });
}

/// A new manager re-adopts what a previous one started (output in files),
/// and can stop it.
#[test]
fn a_new_manager_adopts_running_services() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let logs = d.join("logs");
        let svc = sh("keeper", &d, "echo first; exec sleep 60");
        let proj = project(vec![svc]);
        let mut opts = ManagerOptions::new(smol_spawner());
        opts.log_dir = Some(logs.clone());
        let m1 = ServiceManager::new(proj.clone(), opts.clone()).unwrap();
        let guard1 = StopOnDrop(m1.clone());
        m1.start(&[name("keeper")]).unwrap();
        m1.wait_ready(&[name("keeper")], LONG).await.unwrap();
        let pid = m1.status()[0].pid.unwrap();
        let records = m1.records();
        assert_eq!(records.len(), 1);
        let json = serde_json::to_string(&records).unwrap();
        std::mem::forget(guard1);
        drop(m1);
        assert!(
            !group_members(pid).is_empty(),
            "still running without its manager"
        );

        let m2 = ServiceManager::new(proj, opts).unwrap();
        let _guard = StopOnDrop(m2.clone());
        let errors = m2.adopt(serde_json::from_str(&json).unwrap()).await;
        assert!(errors.is_empty(), "{errors:?}");
        m2.wait_ready(&[name("keeper")], LONG).await.unwrap();
        assert_eq!(m2.status()[0].pid, Some(pid));
        m2.stop_all().await;
        assert!(group_members(pid).is_empty());
        assert_eq!(m2.state("keeper"), Some(ServiceState::Stopped));
        let log = std::fs::read_to_string(logs.join("keeper/stdout.log")).unwrap();
        assert_eq!(log, "first\n");
    });
}

/// The same graph logic under tokio: a job gating a service, then stop.
#[test]
fn works_under_tokio() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut init = sh("init", d, "touch inited");
        init.job = true;
        let mut svc = sh(
            "svc",
            d,
            "test -f inited || exit 4; touch alive; exec sleep 60",
        );
        svc.readiness = Some(probe(
            Check::Exec {
                command: "test".into(),
                args: vec!["-f".into(), "alive".into()],
            },
            3,
        ));
        depends(&mut svc, "init", Condition::CompletedSuccessfully);
        let m = manager(project(vec![init, svc]), tokio_spawner());
        let _guard = StopOnDrop(m.clone());
        m.start(&[name("svc")]).unwrap();
        m.wait_ready(&[name("svc")], LONG).await.unwrap();
        assert_eq!(m.state("svc"), Some(ServiceState::Healthy));
        let pid = m.status()[1].pid.unwrap();
        m.stop_all().await;
        assert!(group_members(pid).is_empty());
    });
}

/// Unknown names are errors naming them; restart brings a service back.
#[test]
fn unknown_names_and_restart() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let svc = sh("one", d, "echo x >> runs; exec sleep 60");
        let m = manager(project(vec![svc]), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        let err = m.start(&[name("nope")]).unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
        m.start(&[name("one")]).unwrap();
        m.wait_ready(&[name("one")], LONG).await.unwrap();
        // Running, and past its first line (a restart before would be legitimate, but not this test).
        eventually("first run", LONG, || {
            std::fs::read_to_string(d.join("runs")).is_ok_and(|s| s == "x\n")
        })
        .await;
        let pid = m.status()[0].pid.unwrap();
        m.restart(&[name("one")]).await.unwrap();
        m.wait_ready(&[name("one")], LONG).await.unwrap();
        assert_ne!(m.status()[0].pid, Some(pid));
        assert!(group_members(pid).is_empty());
        eventually("second run", LONG, || {
            std::fs::read_to_string(d.join("runs")).is_ok_and(|s| s.lines().count() >= 2)
        })
        .await;
        let runs = std::fs::read_to_string(d.join("runs")).unwrap();
        assert_eq!(runs, "x\nx\n");
        m.stop_all().await;
    });
}

/// Restarts, giving up and the event stream under tokio.
#[test]
fn crash_loop_and_events_under_tokio() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut svc = sh("crashy", dir.path(), "echo boom; exit 5");
        svc.restart.mode = RestartMode::OnFailure;
        svc.restart.backoff.initial = Duration::from_millis(50);
        svc.restart.backoff.jitter = 0.5;
        svc.restart.max_restarts = Some(2);
        let m = manager(project(vec![svc]), tokio_spawner());
        let _guard = StopOnDrop(m.clone());
        let mut events = m.subscribe();
        m.start(&[name("crashy")]).unwrap();
        // Without a readiness check it counts as ready while it runs; wait for the end.
        eventually("crashy failed", LONG, || {
            matches!(m.state("crashy"), Some(ServiceState::Failed { .. }))
        })
        .await;
        let err = m.wait_ready(&[name("crashy")], LONG).await.unwrap_err();
        assert!(err.to_string().contains("exited with code 5"), "{err}");
        assert_eq!(m.status()[0].restarts, 2);
        assert_eq!(m.status()[0].exit_code, Some(5));
        let (mut restarting, mut boom) = (0, 0);
        while let Some(Some(ev)) =
            futures_lite::future::or(async { Some(events.next().await) }, async {
                async_io::Timer::after(Duration::from_millis(200)).await;
                None
            })
            .await
        {
            match ev {
                ManagerEvent::State {
                    state: ServiceState::Restarting { .. },
                    ..
                } => restarting += 1,
                ManagerEvent::Output { line, .. } if line.text() == "boom" => boom += 1,
                _ => {}
            }
        }
        assert_eq!(restarting, 2);
        assert_eq!(boom, 3, "every run's output reached the subscriber");
    });
}

/// A stop during a restart backoff ends the loop: the restart never happens.
#[test]
fn stop_during_backoff_cancels_the_restart() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut svc = sh("crashy", d, "echo run >> runs; exit 1");
        svc.restart.mode = RestartMode::Always;
        svc.restart.backoff.initial = Duration::from_millis(700);
        svc.restart.backoff.jitter = 0.0;
        let m = manager(project(vec![svc]), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        m.start(&[name("crashy")]).unwrap();
        eventually("restarting", LONG, || {
            matches!(m.state("crashy"), Some(ServiceState::Restarting { .. }))
        })
        .await;
        m.stop(&[name("crashy")]).await.unwrap();
        assert_eq!(m.state("crashy"), Some(ServiceState::Stopped));
        // Past the moment the restart was due, nothing ran again.
        async_io::Timer::after(Duration::from_millis(1200)).await;
        assert_eq!(m.state("crashy"), Some(ServiceState::Stopped));
        assert_eq!(std::fs::read_to_string(d.join("runs")).unwrap(), "run\n");
    });
}
