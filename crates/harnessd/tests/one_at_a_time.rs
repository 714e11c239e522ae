//! Requests on one project from several clients at once: each has a defined
//! outcome, none waits forever, and what runs on the machine is what `status`
//! says (ADR 023). Real daemon, real processes, found in /proc by a marker
//! each service carries in its command line.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures_lite::future;
use harness_core::ServiceName;
use harness_protocol::{
    Client, ClientError, ErrorCode, Method, ProjectRef, ProjectStatus, ServicesParams, UpParams,
};
use support::*;

/// How long one request may take before it counts as hung (a hang detector,
/// not a timing assertion).
const HANG: Duration = Duration::from_secs(30);

/// `fut`, or a panic naming `what` when it has not returned within [`HANG`].
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    future::or(fut, async {
        async_io::Timer::after(HANG).await;
        panic!("{what} did not return within {HANG:?}: it hangs")
    })
    .await
}

/// A daemon for test `test` and the marker of the test's service processes
/// (unique per test process), whose processes the guard kills at the end.
fn start(test: &str) -> (TestDaemon, String, Marked) {
    let marker = format!("harness-{test}-{}", std::process::id());
    (TestDaemon::start(), marker.clone(), Marked(marker))
}

/// The live service processes carrying `marker`: service name → pids.
fn marked(marker: &str) -> BTreeMap<String, Vec<u32>> {
    let mut found: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    let prefix = format!("{marker}-");
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let service = cmdline
            .split(|b| *b == 0)
            .filter_map(|a| std::str::from_utf8(a).ok())
            .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned));
        if let Some(service) = service
            && alive(pid)
        {
            found.entry(service).or_default().push(pid);
        }
    }
    found
}

/// Kills whatever carries the marker when the test ends, passed or failed.
struct Marked(String);

impl Drop for Marked {
    fn drop(&mut self) {
        for pid in marked(&self.0).into_values().flatten() {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
}

/// A process service that carries `marker-name` as its `$0` and, with
/// `ready_after`, becomes ready that many seconds after it starts (a file its
/// readiness check looks for); `env` is one more environment variable.
fn service(dir: &Path, marker: &str, name: &str, ready_after: Option<f64>, extra: &str) -> String {
    let ready = dir.join(format!("{name}.ready"));
    let ready = ready.display();
    let (script, check) = match ready_after {
        Some(secs) => (
            format!("rm -f {ready}; sleep {secs}; touch {ready}; while :; do sleep 1; done"),
            format!(
                "    health_check:\n      command: test\n      args: [-f, '{ready}']\n      interval: 0.1\n"
            ),
        ),
        None => ("while :; do sleep 1; done".to_owned(), String::new()),
    };
    format!(
        "  {name}:\n    type: process\n    binary: sh\n    args: [-c, '{script}', '{marker}-{name}']\n{check}{extra}"
    )
}

/// A project of several services, two of them slow to become ready (one
/// depending on the other's readiness), written to `dir/services.yaml`;
/// `variant` goes into one service's environment (a different variant is a
/// changed configuration). Returns the reference that loads the files.
fn write_stack(dir: &Path, name: &str, marker: &str, variant: &str) -> ProjectRef {
    std::fs::create_dir_all(dir).expect("project dir");
    let mut yaml = format!("name: {name}\nservices:\n");
    yaml += &service(dir, marker, "db", Some(0.5), "");
    yaml += &service(
        dir,
        marker,
        "api",
        Some(0.3),
        "    dependencies:\n      db: { condition: healthy }\n",
    );
    yaml += &service(
        dir,
        marker,
        "worker",
        None,
        &format!("    env:\n      VARIANT: '{variant}'\n    dependencies: [db]\n"),
    );
    yaml += &service(dir, marker, "web", None, "");
    project_file(dir, &yaml)
}

fn named(name: &str) -> ProjectRef {
    ProjectRef::named(harness_core::ProjectName::new(name).expect("project name"))
}

fn all(project: &ProjectRef) -> ServicesParams {
    ServicesParams {
        project: project.clone(),
        services: Vec::new(),
    }
}

fn some(project: &ProjectRef, services: &[&str]) -> ServicesParams {
    ServicesParams {
        project: project.clone(),
        services: services
            .iter()
            .map(|s| ServiceName::new(*s).expect("service name"))
            .collect(),
    }
}

fn up_wait(project: &ProjectRef, wait: bool) -> UpParams {
    UpParams {
        project: project.clone(),
        wait,
        // Longer than the hang detector: a wait that is not ended by another
        // request shows as a hang, not as a timeout.
        timeout_ms: Some(120_000),
        ..UpParams::default()
    }
}

fn code(r: &Result<ProjectStatus, ClientError>) -> Option<ErrorCode> {
    match r {
        Ok(_) => None,
        Err(e) => Some(e.remote().map_or(ErrorCode::Other, |b| b.code)),
    }
}

/// What `status` says runs (service → pid; empty when the project is not
/// loaded).
async fn said(c: &Client, project: &ProjectRef, when: &str) -> BTreeMap<String, Vec<u32>> {
    match c.status(all(project)).await {
        Ok(projects) => projects
            .iter()
            .flat_map(|p| p.services.iter())
            .filter_map(|s| Some((s.name.to_string(), vec![s.pid?])))
            .collect(),
        Err(e) if e.remote().is_some_and(|b| b.code == ErrorCode::NotFound) => BTreeMap::new(),
        Err(e) => panic!("{when}: status: {e}"),
    }
}

/// The service processes on the machine are what `status` says: one process
/// per running service, none for the others. A service is never seen with two
/// processes; a process that is being spawned may show in /proc a moment
/// before its service shows its pid, so the two are compared until they agree
/// (within the deadline).
async fn assert_machine_matches_status(c: &Client, project: &ProjectRef, marker: &str, when: &str) {
    let until = std::time::Instant::now() + DEADLINE;
    loop {
        let found = marked(marker);
        for (service, pids) in &found {
            assert!(pids.len() < 2, "{when}: {service} runs twice: {found:?}");
        }
        let said = said(c, project, when).await;
        if found == said && marked(marker) == found {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "{when}: the processes on the machine (left) are not what status says (right)\n  left: {found:?}\n right: {said:?}"
        );
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

/// `up --wait` and `down` from two clients at once, the down arriving at a
/// different moment of the up each round (loading, starting, waiting for
/// readiness, done): both return, the up either brings the project up or is
/// ended by the down (`conflict`, saying so), and the processes on the
/// machine are what `status` says. After a last `down` nothing runs.
#[test]
fn up_wait_and_down_from_two_clients_always_return_and_agree_with_the_machine() {
    let (d, marker, _cleanup) = start("updown");
    let files = write_stack(&d.dir.path().join("p"), "updown", &marker, "1");
    let name = named("updown");
    smol::block_on(async {
        let ups = Client::connect(&d.state).await.unwrap();
        let downs = Client::connect(&d.state).await.unwrap();
        let mut loaded = false;
        for round in 0..20u64 {
            // Even rounds race against a project that is up (the up then changes
            // nothing: the down must not be undone by its start); odd rounds
            // against one that is down (the up loads it and waits for readiness).
            let delay = if round % 2 == 0 {
                if !loaded {
                    bounded("bringing it up", ups.up(up_wait(&files, true)))
                        .await
                        .expect("up --wait");
                    loaded = true;
                }
                Duration::from_millis(round)
            } else {
                if loaded {
                    bounded("taking it down", downs.down(all(&name)))
                        .await
                        .expect("down");
                    loaded = false;
                }
                Duration::from_millis(round * 97 % 1300)
            };
            let (up, down) = future::zip(
                bounded(&format!("round {round}: up --wait"), async {
                    ups.up(up_wait(&files, true)).await
                }),
                bounded(&format!("round {round}: down"), async {
                    async_io::Timer::after(delay).await;
                    downs.down(all(&name)).await
                }),
            )
            .await;
            let when = format!("round {round} (down after {delay:?})");
            match &up {
                Ok(_) => {}
                Err(e) if code(&up) == Some(ErrorCode::Conflict) => {
                    assert!(e.to_string().contains("taken down"), "{when}: {e}");
                    assert!(
                        down.is_ok(),
                        "{when}: the up was ended by no down: {down:?}"
                    );
                }
                Err(e) => panic!("{when}: up --wait failed: {e}"),
            }
            match code(&down) {
                None => {}
                // Only when the down came first and nothing was loaded yet.
                Some(ErrorCode::NotFound) if !loaded => {}
                other => panic!("{when}: down answered {other:?}: {down:?}"),
            }
            assert_machine_matches_status(&downs, &name, &marker, &when).await;
            loaded = downs.status(all(&name)).await.is_ok();
        }
        let last = bounded("the last down", downs.down(all(&name))).await;
        assert!(
            last.is_ok() || (!loaded && code(&last) == Some(ErrorCode::NotFound)),
            "{last:?}"
        );
        assert_eq!(
            marked(&marker),
            BTreeMap::new(),
            "processes left after down"
        );
    });
}

/// A `down` the daemon receives right after an `up` (the up still loading its
/// files) waits for that up instead of answering "no project named …", then
/// stops everything: nothing of the project runs afterwards. The two requests
/// go over one connection so the daemon surely receives the up first.
#[test]
fn down_right_after_up_waits_for_its_load_and_stops_everything() {
    let (d, marker, _cleanup) = start("loading");
    let files = write_stack(&d.dir.path().join("p"), "loading", &marker, "1");
    let name = named("loading");
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        for round in 0..8 {
            let wait = round % 2 == 0;
            // Sent at once, in this order.
            let up = c.stream(Method::Up(up_wait(&files, wait))).unwrap();
            let down = c.down(all(&name));
            let (up, down) = future::zip(
                bounded(&format!("round {round}: up"), async {
                    let mut up = up;
                    while let Some(item) = futures_lite::StreamExt::next(&mut up).await {
                        item?;
                    }
                    Ok::<(), ClientError>(())
                }),
                bounded(&format!("round {round}: down"), down),
            )
            .await;
            let when = format!("round {round} (up wait: {wait})");
            if let Err(e) = &down {
                panic!("{when}: down failed: {e}");
            }
            // The up came first and did what it does; an up --wait is then
            // ended by the down (readiness takes longer than this).
            match &up {
                Ok(()) => assert!(!wait, "{when}: up --wait succeeded"),
                Err(e) => {
                    assert!(
                        wait && e.remote().is_some_and(|b| b.code == ErrorCode::Conflict),
                        "{when}: up failed: {e}"
                    );
                    assert!(e.to_string().contains("taken down"), "{when}: {e}");
                }
            }
            let st = c.status(all(&name)).await;
            assert!(st.is_err(), "{when}: the project is still loaded: {st:?}");
            assert_machine_matches_status(&c, &name, &marker, &when).await;
            assert_eq!(marked(&marker), BTreeMap::new(), "{when}: processes left");
        }
    });
}

/// `up` (two variants of the configuration, so each may reload the project),
/// `restart` and `stop` from four clients at once, round after round: every
/// request returns, and no service ever has two processes — what runs is what
/// `status` says. After a last `down` nothing runs.
#[test]
fn concurrent_up_restart_and_stop_never_leave_two_processes_for_one_service() {
    let (d, marker, _cleanup) = start("mixed");
    let one = write_stack(&d.dir.path().join("one"), "mixed", &marker, "1");
    let two = write_stack(&d.dir.path().join("two"), "mixed", &marker, "2");
    let name = named("mixed");
    smol::block_on(async {
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(Client::connect(&d.state).await.unwrap());
        }
        let [a, b, r, s] = &clients[..] else {
            unreachable!()
        };
        // Loaded once before the rounds, so no request finds it missing.
        a.up(up_wait(&one, false)).await.unwrap();
        for round in 0..15u64 {
            let stagger = |k: u64| Duration::from_millis((round * 37 + k * 53) % 400);
            let after = |k: u64| async_io::Timer::after(stagger(k));
            let when = format!("round {round}");
            let ((up1, up2), (restart, stop)) = future::zip(
                future::zip(
                    bounded(&format!("{when}: up (one)"), async {
                        after(0).await;
                        a.up(up_wait(&one, round % 2 == 0)).await
                    }),
                    bounded(&format!("{when}: up (two)"), async {
                        after(1).await;
                        b.up(up_wait(&two, round % 3 == 0)).await
                    }),
                ),
                future::zip(
                    bounded(&format!("{when}: restart"), async {
                        after(2).await;
                        r.restart(some(&name, &["db"])).await
                    }),
                    bounded(&format!("{when}: stop"), async {
                        after(3).await;
                        s.stop(some(&name, &["web", "api"])).await
                    }),
                ),
            )
            .await;
            for (what, result) in [
                ("up (one)", &up1),
                ("up (two)", &up2),
                ("restart", &restart),
                ("stop", &stop),
            ] {
                // A wait ended by another request's stop, restart or reload is a conflict.
                assert!(
                    matches!(code(result), None | Some(ErrorCode::Conflict)),
                    "{when}: {what}: {result:?}"
                );
            }
            assert_machine_matches_status(s, &name, &marker, &when).await;
        }
        bounded("the last down", s.down(all(&name)))
            .await
            .expect("down");
        assert_eq!(
            marked(&marker),
            BTreeMap::new(),
            "processes left after down"
        );
    });
}

/// While an `up --wait` waits for a service that never becomes ready, the
/// project is not held: `status` and `logs` answer, and a `start`, `stop` and
/// `up` of a service it does not wait for run. A `down` then ends the wait at
/// once: the up answers `conflict`, saying the project was taken down.
#[test]
fn a_waiting_up_holds_nothing_and_a_down_ends_its_wait() {
    let (d, marker, _cleanup) = start("waiting");
    let dir = d.dir.path().join("p");
    std::fs::create_dir_all(&dir).unwrap();
    let mut yaml = "name: waiting\nservices:\n".to_owned();
    yaml += &service(&dir, &marker, "never", Some(600.0), "");
    yaml += &service(&dir, &marker, "other", None, "");
    let files = project_file(&dir, &yaml);
    let name = named("waiting");
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let waiting = smol::spawn({
            let c = Client::connect(&d.state).await.unwrap();
            let mut params = up_wait(&files, true);
            params.services = vec![ServiceName::new("never").unwrap()];
            async move { c.up(params).await }
        });
        let until = std::time::Instant::now() + DEADLINE;
        while !said(&c, &name, "waiting").await.contains_key("never") {
            assert!(std::time::Instant::now() < until, "never did not start");
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
        bounded("status", c.status(all(&name))).await.unwrap();
        bounded("logs", async {
            let mut logs = c
                .logs(harness_protocol::LogsParams {
                    project: name.clone(),
                    ..harness_protocol::LogsParams::default()
                })
                .unwrap();
            while let Some(item) = futures_lite::StreamExt::next(&mut logs).await {
                item.unwrap();
            }
        })
        .await;
        bounded("start", c.start(some(&name, &["other"])))
            .await
            .unwrap();
        bounded("stop", c.stop(some(&name, &["other"])))
            .await
            .unwrap();
        let mut other = up_wait(&files, false);
        other.services = vec![ServiceName::new("other").unwrap()];
        bounded("up", c.up(other)).await.unwrap();
        assert!(!waiting.is_finished(), "the wait ended early");
        bounded("down", c.down(all(&name))).await.unwrap();
        let ended = bounded("the waiting up", waiting).await;
        let e = ended.expect_err("ended by the down");
        assert_eq!(e.remote().map(|b| b.code), Some(ErrorCode::Conflict), "{e}");
        assert!(e.to_string().contains("taken down"), "{e}");
        assert_eq!(
            marked(&marker),
            BTreeMap::new(),
            "processes left after down"
        );
    });
}
