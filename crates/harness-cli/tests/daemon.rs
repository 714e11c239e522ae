//! End-to-end tests of the daemon-driven verbs: the built `harness` and `harnessd` binaries,
//! real processes, each test with its own state directory (so its own daemon).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use support::{Env, alive, kill, sh_service, wait_until};

const LONG: Duration = Duration::from_secs(60);

fn stack() -> String {
    let mut y = String::from("name: e2e\nservices:\n");
    y += &sh_service("setup", "echo setup done", "job: true");
    y += &sh_service(
        "db",
        "echo db starting; echo db warning >&2; exec sleep 300",
        "health_check:\n  command: \"true\"\n  interval: 0.2s",
    );
    y += &sh_service(
        "app",
        "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
        "dependencies:\n  db: { condition: healthy }\n  setup: { condition: completed_successfully }",
    );
    y
}

fn by_name(rows: &[serde_json::Value]) -> BTreeMap<String, serde_json::Value> {
    rows.iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn pid_of(row: &serde_json::Value) -> u32 {
    row["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid in {row}")) as u32
}

#[test]
fn up_wait_status_logs_stop_down() {
    let env = Env::with_daemon();
    env.write("services.yaml", &stack());

    let r = env.run(&["up", "-d", "--wait", "--timeout", "60s"]).ok();
    assert!(r.stderr.contains("started harnessd"), "{}", r.stderr);
    assert!(r.stderr.contains("is up"), "{}", r.stderr);

    // status --json: the stable fields, real pids.
    let rows = env.status();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        for key in [
            "name",
            "kind",
            "state",
            "health",
            "pid",
            "restarts",
            "exit_code",
            "host",
        ] {
            assert!(row.get(key).is_some(), "missing {key} in {row}");
        }
    }
    let rows = by_name(&rows);
    assert_eq!(rows["db"]["state"], "healthy", "{:?}", rows["db"]);
    assert_eq!(rows["setup"]["state"], "completed", "{:?}", rows["setup"]);
    assert_eq!(rows["setup"]["exit_code"], 0);
    let app_pid = pid_of(&rows["app"]);
    let db_pid = pid_of(&rows["db"]);
    assert!(alive(app_pid) && alive(db_pid));

    // The table.
    let table = env.run(&["status"]).ok().stdout;
    let header = table.lines().next().unwrap();
    for col in [
        "NAME", "KIND", "HOST", "STATE", "HEALTH", "PID", "RESTARTS", "UPTIME",
    ] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains(&db_pid.to_string()), "{table}");
    assert!(
        !table.contains('\u{1b}'),
        "no colours when not a terminal:\n{table}"
    );
    assert_eq!(env.run(&["ps", "--json"]).ok().code, 0);

    // Logs: prefixed, stderr marked, ordered per service.
    assert!(wait_until(LONG, || env
        .run(&["logs", "app"])
        .stdout
        .contains("tick 3")));
    let logs = env.run(&["logs"]).ok().stdout;
    assert!(
        logs.lines()
            .any(|l| l.starts_with("db") && l.ends_with("| db starting")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.starts_with("db") && l.ends_with("! db warning")),
        "stderr is marked:\n{logs}"
    );
    assert!(logs.contains("| setup done"), "{logs}");
    let ticks: Vec<u32> = logs
        .lines()
        .filter_map(|l| l.split("| tick ").nth(1))
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(
        ticks.len() >= 3 && ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "{ticks:?}"
    );

    let tail = env.run(&["logs", "-n", "2", "app"]).ok().stdout;
    assert_eq!(tail.lines().count(), 2, "{tail}");

    let json = env.run(&["logs", "--json", "db"]).ok().stdout;
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["service"], "db");
    assert!(first["stream"] == "stdout" || first["stream"] == "stderr");

    let coloured = env.run(&["--color", "always", "logs", "db"]).ok().stdout;
    assert!(coloured.contains('\u{1b}'), "{coloured}");
    let plain = env
        .cmd(&["logs", "db"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains('\u{1b}'));

    let stamped = env
        .run(&["logs", "--timestamps", "-n", "1", "app"])
        .ok()
        .stdout;
    assert!(
        stamped.starts_with("20") && stamped.contains("Z app"),
        "{stamped}"
    );

    // env, answered by the daemon that runs the project.
    let app_env = env.run(&["env", "app"]).ok().stdout;
    assert!(app_env.contains("HARNESS_SERVICE=app"), "{app_env}");
    assert!(app_env.contains("HARNESS_PROJECT=e2e"), "{app_env}");

    // stop one service: it ends, its dependencies stay.
    env.run(&["stop", "app"]).ok();
    let rows = by_name(&env.status());
    assert_eq!(rows["app"]["state"], "stopped", "{:?}", rows["app"]);
    assert!(wait_until(LONG, || !alive(app_pid)));
    assert!(alive(db_pid));

    // down: everything stops.
    env.run(&["down"]).ok();
    assert!(
        wait_until(LONG, || !alive(db_pid)),
        "db still runs after down"
    );
}

#[test]
fn up_wait_names_the_service_that_failed_and_why() {
    let env = Env::with_daemon();
    let mut y = String::from("name: failing\nservices:\n");
    y += &sh_service("migrate", "echo cannot migrate >&2; exit 3", "job: true");
    y += &sh_service(
        "api",
        "exec sleep 300",
        "dependencies:\n  migrate: { condition: completed_successfully }",
    );
    env.write("services.yaml", &y);
    let r = env.run(&["up", "-d", "--wait", "--timeout", "60s"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("migrate"), "{}", r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        line.contains("migrate") || line.contains("api"),
        "one-line cause: {}",
        r.stderr
    );
}

#[test]
fn config_errors_stop_up_before_any_daemon_starts() {
    let env = Env::with_daemon();
    env.write(
        "services.yaml",
        "name: x\nservices:\n  a:\n    binary: sleep\n    dependencies: [b]\n",
    );
    let r = env.run(&["up", "-d"]).expect_code(3);
    assert!(r.stderr.contains("services.yaml:5:"), "{}", r.stderr);
    assert!(env.daemon_pid().is_none(), "no daemon for an invalid file");
}

#[test]
fn daemon_start_status_stop() {
    let env = Env::with_daemon();
    env.run(&["daemon", "status"]).expect_code(4);

    let r = env.run(&["daemon", "start"]).ok();
    assert!(r.stdout.contains("started"), "{}", r.stdout);
    let pid = env.daemon_pid().expect("address file written");
    assert!(alive(pid));

    let r = env.run(&["daemon", "status", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["pid"], pid);
    // How services are stopped: a cgroup of their own, or the fallback.
    let mode = v["stopping"]["mode"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(mode == "cgroup" || mode == "process_group", "{v}");
    let text = env.run(&["daemon", "status"]).ok().stdout;
    assert!(text.contains(&pid.to_string()), "{text}");
    let want = if mode == "cgroup" {
        "stopping:   cgroup v2 at "
    } else {
        "stopping:   process group"
    };
    assert!(text.contains(want), "{text}");

    let r = env.run(&["daemon", "start"]).ok();
    assert!(r.stdout.contains("already running"), "{}", r.stdout);
    assert_eq!(env.daemon_pid(), Some(pid));

    env.run(&["daemon", "stop"]).ok();
    assert!(!alive(pid), "daemon stop returns once the daemon is gone");
    env.run(&["status"]).expect_code(4);
}

#[test]
fn foreground_up_follows_logs_and_ctrl_c_stops_the_services() {
    let env = Env::with_daemon();
    env.write("services.yaml", &stack());
    let mut child = env
        .cmd(&["up"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + LONG;
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("| tick 2")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("no logs followed within {LONG:?}: {seen:?}");
            }
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.starts_with("setup") && l.contains("| setup done")),
        "{seen:?}"
    );
    let app_pid = pid_of(&by_name(&env.status())["app"]);

    kill(child.id(), 2); // Ctrl-C
    let (wtx, wrx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = wtx.send(child.wait_with_output());
    });
    let out = wrx
        .recv_timeout(LONG)
        .expect("up exits after Ctrl-C")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_until(LONG, || !alive(app_pid)),
        "Ctrl-C stops the services"
    );
    let rows = by_name(&env.status());
    assert_eq!(rows["app"]["state"], "stopped");
}

#[test]
fn restart_gives_a_new_process() {
    let env = Env::with_daemon();
    let mut y = String::from("name: restart\nservices:\n");
    y += &sh_service("web", "echo started; exec sleep 300", "");
    env.write("services.yaml", &y);
    env.run(&["up", "-d", "--wait"]).ok();
    let before = pid_of(&by_name(&env.status())["web"]);
    env.run(&["restart", "web"]).ok();
    assert!(wait_until(LONG, || {
        let rows = by_name(&env.status());
        rows["web"]["pid"]
            .as_u64()
            .is_some_and(|p| p as u32 != before)
    }));
    assert!(wait_until(LONG, || !alive(before)));
}

#[test]
fn unknown_service_is_a_usage_error() {
    let env = Env::with_daemon();
    let mut y = String::from("name: unknown\nservices:\n");
    y += &sh_service("web", "exec sleep 300", "");
    env.write("services.yaml", &y);
    let r = env.run(&["up", "-d", "nope"]).expect_code(2);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);
}

/// The daemon dies (SIGKILL) with 20 services running: they keep running, the next daemon
/// re-attaches to the same processes, and no output line is lost or repeated.
#[test]
fn kill_9_of_the_daemon_loses_nothing() {
    let env = Env::with_daemon();
    let n = 20;
    let mut y = String::from("name: survive\nservices:\n");
    for i in 0..n {
        y += &sh_service(
            &format!("s{i:02}"),
            "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done",
            "",
        );
    }
    env.write("services.yaml", &y);
    env.run(&["up", "-d", "--wait", "--timeout", "120s"]).ok();
    let before: BTreeMap<String, u32> = by_name(&env.status())
        .into_iter()
        .map(|(k, v)| (k, pid_of(&v)))
        .collect();
    assert_eq!(before.len(), n);

    let daemon = env.daemon_pid().unwrap();
    kill(daemon, 9);
    assert!(wait_until(LONG, || !alive(daemon)));
    for (name, pid) in &before {
        assert!(alive(*pid), "{name} died with the daemon");
    }
    // Lines written while no daemon runs must not be lost either: let some be written.
    let log = env.state.path().join("logs/survive/s00/stdout.log");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let before_size = size(&log);
    assert!(
        wait_until(LONG, || size(&log) > before_size + 50),
        "s00 writes no output while the daemon is down ({})",
        log.display()
    );

    env.run(&["daemon", "start"]).ok();
    let after: BTreeMap<String, u32> = by_name(&env.status())
        .into_iter()
        .map(|(k, v)| (k, pid_of(&v)))
        .collect();
    assert_eq!(
        before, after,
        "the new daemon re-attached to the same processes"
    );

    // Wait for output written after the restart, then check every line is there once.
    let count = |svc: &str| -> Vec<u64> {
        env.run(&["logs", "--json", svc])
            .ok()
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                v["line"]
                    .as_str()
                    .and_then(|s| s.strip_prefix("line "))
                    .and_then(|n| n.parse().ok())
            })
            .collect()
    };
    let mut last = Vec::new();
    assert!(wait_until(LONG, || {
        last = count("s00");
        last.len() > 30
    }));
    for svc in ["s00", "s07", "s19"] {
        let lines = count(svc);
        let expected: Vec<u64> = (1..=lines.len() as u64).collect();
        assert_eq!(lines, expected, "{svc}: a line was lost or repeated");
    }
    env.run(&["down"]).ok();
    for (name, pid) in &before {
        assert!(
            wait_until(LONG, || !alive(*pid)),
            "{name} still runs after down"
        );
    }
}

/// The demo stack of the README, as a newcomer runs it: the build job, the migration job, the
/// API gated on both and on its HTTP health, and the worker that calls the API.
#[test]
fn the_demo_stack_comes_up_and_the_worker_reaches_the_api() {
    let env = Env::with_daemon();
    let demo =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo/services.yaml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = env.dir.path().join("demo-data");
    let up = env
        .cmd(&[
            "-f",
            support::s(&demo),
            "up",
            "-d",
            "--wait",
            "--timeout",
            "300s",
        ])
        .env("DEMO_PORT", port.to_string())
        .env("DEMO_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let rows = by_name(&env.status());
    assert_eq!(rows["build"]["state"], "completed");
    assert_eq!(rows["migrate"]["state"], "completed");
    assert_eq!(rows["api"]["state"], "healthy");
    assert!(data.join("schema_version").exists());
    assert!(
        wait_until(LONG, || env
            .run(&["-p", "demo", "logs", "worker"])
            .stdout
            .contains("done {\"job\":")),
        "the worker never reached the API"
    );
    let api_log = env.run(&["-p", "demo", "logs", "api"]).ok().stdout;
    assert!(
        api_log.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{api_log}"
    );
    env.run(&["-p", "demo", "down"]).ok();
}

#[test]
fn a_daemon_that_cannot_start_is_reported_with_exit_4() {
    let env = Env::with_daemon();
    let file = env.write("not-a-dir", "");
    let bad = file.join("state");
    let r = env
        .cmd(&["--state-dir", support::s(&bad), "daemon", "start"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(4), "{r:?}");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("not-a-dir"),
        "names the state dir: {stderr}"
    );
}

#[test]
fn logs_follow_streams_new_lines_until_ctrl_c() {
    let env = Env::with_daemon();
    let mut y = String::from("name: follow\nservices:\n");
    y += &sh_service(
        "counter",
        "i=0; while true; do i=$((i+1)); echo n $i; sleep 0.1; done",
        "",
    );
    env.write("services.yaml", &y);
    env.run(&["up", "-d", "--wait"]).ok();
    let mut child = env
        .cmd(&["logs", "-f", "-n", "1", "counter"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let numbers: Vec<u64> = (0..10)
        .map(|_| {
            let line = rx.recv_timeout(LONG).expect("a followed line");
            line.rsplit(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none lost: {numbers:?}"
    );
    kill(child.id(), 2);
    let (wtx, wrx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = wtx.send(child.wait());
    });
    let status = wrx
        .recv_timeout(LONG)
        .expect("logs -f ends on Ctrl-C")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
