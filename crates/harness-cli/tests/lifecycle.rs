//! End-to-end tests of what `up`, `stop`, `restart` and the other verbs tell about the
//! lifecycle: signals, a project taken down elsewhere, unknown names, cascades. The built
//! `harness` and `harnessd`, real processes, each test with its own daemon.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{Env, alive, kill, sh_project, wait_until};

const LONG: Duration = Duration::from_secs(60);

fn rows(env: &Env) -> BTreeMap<String, serde_json::Value> {
    env.status()
        .into_iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r))
        .collect()
}

/// The pid of `service` once it runs (the daemon may still be starting).
fn running_pid(env: &Env, service: &str) -> u32 {
    let mut pid = None;
    assert!(
        wait_until(LONG, || {
            let r = env.run(&["status", "--json"]);
            pid = serde_json::from_str::<Vec<serde_json::Value>>(&r.stdout)
                .unwrap_or_default()
                .into_iter()
                .find(|row| row["name"] == service)
                .and_then(|row| row["pid"].as_u64())
                .map(|p| p as u32);
            r.code == 0 && pid.is_some()
        }),
        "{service} never ran"
    );
    pid.unwrap()
}

/// Project `name` with services that only sleep, each with its extra configuration.
fn sleepers(name: &str, services: &[(&str, &str)]) -> String {
    let services: Vec<(&str, &str, &str)> = services
        .iter()
        .map(|(s, extra)| (*s, "exec sleep 300", *extra))
        .collect();
    sh_project(name, &services)
}

/// Project `name` with a service whose readiness check never passes.
fn never_ready(name: &str) -> String {
    sh_project(
        name,
        &[(
            "slow",
            "echo slow starting; exec sleep 300",
            "readiness:\n  command: \"false\"\n  interval: 0.2s",
        )],
    )
}

#[test]
fn a_signal_to_up_detached_only_stops_the_waiting() {
    let env = Env::with_daemon();
    for (signal, code) in [(15, 143), (2, 130), (1, 129)] {
        // A project of its own each time: its service runs only once `up` has sent its
        // request, so after `up` catches signals.
        env.write(
            "services.yaml",
            &never_ready(&format!("neverready{signal}")),
        );
        let up = env.spawn(&["up", "-d", "--wait", "--timeout", "5m"]);
        let pid = running_pid(&env, "slow");
        kill(up.pid(), signal);
        let r = up.finish(LONG).expect_code(code);
        assert!(!r.stderr.contains("error:"), "{}", r.stderr);
        assert!(alive(pid), "signal {signal}: the service keeps running");
        let state = rows(&env)["slow"]["state"].as_str().unwrap().to_string();
        assert!(
            ["running", "unhealthy", "starting"].contains(&state.as_str()),
            "signal {signal}: {state}"
        );
        assert_eq!(rows(&env)["slow"]["pid"].as_u64(), Some(u64::from(pid)));
        // Each project is taken down here: the environment's cleanup knows only the last.
        env.run(&["down"]).ok();
    }
}

/// Attached `up` of project `name` with a service `web`, once it follows web's logs;
/// with web's pid.
fn attached_up_following(env: &Env, name: &str) -> (support::Background, u32) {
    let y = sh_project(name, &[("web", "echo web up; exec sleep 300", "")]);
    env.write("services.yaml", &y);
    let mut up = env.spawn(&["up"]);
    up.wait_line(LONG, |l| l.contains("| web up"));
    let pid = running_pid(env, "web");
    (up, pid)
}

/// Sends `signal` to attached `up`: it exits with `code`, says it stopped the one service,
/// prints no error line, and the service's process `pid` ends.
fn interrupt_attached(up: support::Background, signal: i32, code: i32, pid: u32) {
    kill(up.pid(), signal);
    let r = up.finish(LONG).expect_code(code);
    assert!(!r.stderr.contains("error:"), "{}", r.stderr);
    assert!(r.stderr.contains("stopped 1 service"), "{}", r.stderr);
    assert!(wait_until(LONG, || !alive(pid)), "the service is stopped");
}

#[test]
fn a_signal_to_attached_up_stops_the_project_without_an_error_line() {
    let env = Env::with_daemon();
    // While it waits for readiness.
    env.write("services.yaml", &never_ready("neverready"));
    let up = env.spawn(&["up"]);
    let pid = running_pid(&env, "slow");
    interrupt_attached(up, 15, 143, pid);
    // While it follows the logs.
    let (up, pid) = attached_up_following(&env, "attached");
    interrupt_attached(up, 2, 130, pid);
}

#[test]
fn attached_up_exits_when_the_project_is_taken_down_elsewhere() {
    let env = Env::with_daemon();
    let (up, pid) = attached_up_following(&env, "takendown");
    env.run(&["down"]).ok();
    let r = up.finish(LONG).ok();
    assert!(
        r.stderr.contains("project takendown was taken down"),
        "{}",
        r.stderr
    );
    assert!(!alive(pid));
}

#[test]
fn unknown_services_get_a_suggestion_and_unknown_verbs_no_wrong_one() {
    let env = Env::with_daemon();
    env.write(
        "services.yaml",
        &sleepers("typos", &[("api", ""), ("db", "")]),
    );
    let r = env.run(&["up", "-d", "apii"]).expect_code(2);
    assert!(
        r.stderr.contains("no service `apii`") && r.stderr.contains("did you mean `api`?"),
        "{}",
        r.stderr
    );
    env.run(&["up", "-d", "--wait"]).ok();
    for verb in ["stop", "restart", "start", "logs"] {
        let r = env.run(&[verb, "apii"]).expect_code(2);
        assert!(
            r.stderr
                .contains("no service `apii` in project `typos`; did you mean `api`?"),
            "{verb}: {}",
            r.stderr
        );
    }
    let r = env.run(&["stop", "cache"]).expect_code(2);
    assert!(r.stderr.contains("no service `cache`"), "{}", r.stderr);
    assert!(!r.stderr.contains("did you mean"), "{}", r.stderr);
    assert_eq!(rows(&env)["api"]["state"], "running", "nothing was stopped");

    for (typed, wrong) in [("top", "'stop'"), ("pause", "'status'")] {
        let r = env.run(&[typed]).expect_code(2);
        assert!(r.stderr.contains(typed), "{}", r.stderr);
        assert!(!r.stderr.contains(wrong), "{typed}: {}", r.stderr);
    }
    let r = env.run(&["stauts"]).expect_code(2);
    assert!(r.stderr.contains("'status'"), "{}", r.stderr);
}

#[test]
fn stop_and_restart_name_the_dependents_they_took_along() {
    let env = Env::with_daemon();
    let services = [
        ("db", ""),
        ("api", "dependencies: [db]"),
        ("web", "dependencies: [api]"),
        ("other", ""),
    ];
    env.write("services.yaml", &sleepers("cascade", &services));
    env.run(&["up", "-d", "--wait"]).ok();

    let r = env.run(&["stop", "db"]).ok();
    assert!(
        r.stderr
            .contains("stopped db, api, web (api and web depend on db)"),
        "{}",
        r.stderr
    );
    let st = rows(&env);
    for s in ["db", "api", "web"] {
        assert_eq!(st[s]["state"], "stopped", "{s}");
    }
    assert_eq!(st["other"]["state"], "running");

    env.run(&["up", "-d", "--wait"]).ok();
    let r = env.run(&["restart", "api", "--json"]).ok();
    assert!(
        r.stderr.contains("restarted api, web (web depends on api)"),
        "{}",
        r.stderr
    );
    let answer: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}): {}", r.stdout));
    assert_eq!(answer["affected"], serde_json::json!(["api", "web"]));
    assert_eq!(rows(&env)["db"]["state"], "running", "db was not restarted");
}
