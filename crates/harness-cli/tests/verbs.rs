//! The verbs of the daily loop against a real daemon and real processes: `exec` beside a
//! local process service (its environment, directory, exit code, stdin, a terminal),
//! `events` (a restart and why, in text and JSON, until `down`) and `ls` (every project
//! with its counts, from anywhere; an empty daemon; no daemon).

mod support;

use std::time::Duration;

use support::{Env, kill, libc_sigkill, s, sh_project, sh_service, wait_until};

const LONG: Duration = Duration::from_secs(60);

/// The pid of `service` from `status --json`.
fn pid_of(env: &Env, service: &str) -> Option<u32> {
    env.status()
        .iter()
        .find(|r| r["name"] == service)
        .and_then(|r| r["pid"].as_u64())
        .map(|p| p as u32)
}

#[test]
fn exec_runs_beside_a_local_service_with_its_environment_directory_and_exit_code() {
    let env = Env::with_daemon();
    let workdir = env.dir.path().join("work dir");
    std::fs::create_dir(&workdir).unwrap();
    env.write(
        "services.yaml",
        &format!(
            "name: execlocal\nservices:\n{}",
            sh_service(
                "api",
                "exec sleep 300",
                &format!("working_dir: \"{}\"\nenv:\n  FOO: bar baz", s(&workdir)),
            )
        ),
    );
    env.run(&["up", "-d", "--wait", "--timeout", "30s"]).ok();

    let r = env
        .run(&[
            "exec",
            "api",
            "--",
            "sh",
            "-c",
            "echo \"$FOO\"; pwd; echo \"$HARNESS_SERVICE\"; exit 3",
        ])
        .expect_code(3);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines, ["bar baz", s(&workdir), "api"], "{r:?}");

    // Without `--`, the command's own flags stay its own.
    let r = env.run(&["exec", "api", "ls", "-a", "."]).ok();
    assert!(r.stdout.lines().any(|l| l == ".."), "{r:?}");

    // stdin reaches the command.
    let r = env.run_with_input(
        &["exec", "-T", "api", "--", "tr", "a-z", "A-Z"],
        b"piped in\n",
    );
    assert_eq!(r.ok().stdout, "PIPED IN\n");

    // Errors: a typo, a command that does not exist, a service that does not run.
    let r = env.run(&["exec", "apii", "--", "true"]).expect_code(2);
    assert!(r.stderr.contains("did you mean `api`?"), "{r:?}");
    let r = env
        .run(&["exec", "api", "--", "harness-no-such-command"])
        .expect_code(127);
    assert!(r.stderr.contains("harness-no-such-command"), "{r:?}");
    env.run(&["stop", "api"]).ok();
    let r = env.run(&["exec", "api", "--", "true"]).expect_code(1);
    assert!(r.stderr.contains("not running"), "{r:?}");
}

#[test]
fn exec_runs_as_the_user_of_the_service() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        eprintln!("skipping: running as another user needs root");
        return;
    }
    let env = Env::with_daemon();
    env.write(
        "services.yaml",
        &sh_project("execuser", &[("api", "exec sleep 300", "user: nobody")]),
    );
    env.run(&["up", "-d", "--wait", "--timeout", "30s"]).ok();
    let r = env
        .run(&["exec", "api", "--", "sh", "-c", "id -un; echo \"$USER\""])
        .ok();
    assert_eq!(r.stdout, "nobody\nnobody\n", "{r:?}");
}

#[test]
fn exec_beside_a_local_service_hands_it_the_terminal() {
    let env = Env::with_daemon();
    env.write(
        "services.yaml",
        &sh_project("exectty", &[("api", "exec sleep 300", "")]),
    );
    env.run(&["up", "-d", "--wait", "--timeout", "30s"]).ok();
    let script = "if [ -t 0 ]; then echo tty; stty size; else echo no-tty; fi; exit 4";
    let (out, code) = env.run_in_pty(&["exec", "api", "--", "sh", "-c", script], 33, 101);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("tty") && !out.contains("no-tty"), "{out}");
    assert!(out.contains("33 101"), "{out}");
}

#[test]
fn events_show_restarts_and_why_health_and_reloads_in_text_and_json_until_down() {
    let env = Env::with_daemon();
    let project = |tick: &str| {
        sh_project(
            "events",
            &[
                ("worker", "exec sleep 300", "restart: always"),
                (
                    "tick",
                    tick,
                    "health_check:\n  command: \"true\"\n  interval: 0.2s",
                ),
            ],
        )
    };
    env.write("services.yaml", &project("exec sleep 300"));
    env.run(&["up", "-d", "--wait", "--timeout", "30s"]).ok();
    let mut text = env.spawn(&["events"]);
    let mut json = env.spawn(&["events", "--json"]);

    // Both follow once a restart of `tick` shows in each.
    assert!(
        wait_until(LONG, || {
            env.run(&["restart", "tick"]).ok();
            let seen = |b: &mut support::Background| {
                b.try_line(Duration::from_secs(2), |l| l.contains("tick"))
                    .is_some()
            };
            seen(&mut text) & seen(&mut json)
        }),
        "the events followers never showed a restart of tick"
    );

    let pid = pid_of(&env, "worker").expect("worker runs");
    kill(pid, libc_sigkill());
    let line = text.wait_line(LONG, |l| {
        l.contains("worker") && l.contains("harness:") && l.contains("killed by SIGKILL")
    });
    assert!(line.contains("restart 1"), "{line}");
    let line = text.wait_line(LONG, |l| l.contains("worker") && l.contains("restarting"));
    assert!(line.contains("killed by SIGKILL"), "{line}");

    let parse = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap_or_default();
    let report = json.wait_line(LONG, |l| {
        let v = parse(l);
        v["service"] == "worker" && v["event"] == "report"
    });
    let v = parse(&report);
    assert_eq!(v["project"], "events", "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("killed by SIGKILL") && m.contains("restart 1")),
        "{v}"
    );
    let restarting = json.wait_line(LONG, |l| {
        let v = parse(l);
        v["service"] == "worker" && v["event"] == "state" && v["state"] == "restarting"
    });
    let v = parse(&restarting);
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("killed by SIGKILL")),
        "{v}"
    );
    assert!(v["ts_ms"].as_u64().is_some_and(|t| t > 0), "{v}");
    json.wait_line(LONG, |l| {
        let v = parse(l);
        v["service"] == "worker" && v["state"] == "running"
    });

    // Health verdicts, with the check's result.
    text.wait_line(LONG, |l| {
        l.contains("tick") && l.contains("health: healthy")
    });

    // A reload that changes a service says so.
    env.write("services.yaml", &project("exec sleep 301"));
    env.run(&["up", "-d", "--wait", "--timeout", "30s"]).ok();
    text.wait_line(LONG, |l| {
        l.contains("tick") && l.contains("reloaded:") && l.contains("configuration changed")
    });
    json.wait_line(LONG, |l| {
        let v = parse(l);
        v["service"] == "tick" && v["event"] == "reload"
    });
    // And the stream goes on with the new configuration's runs.
    json.wait_line(LONG, |l| {
        let v = parse(l);
        v["service"] == "tick" && v["event"] == "state" && v["state"] == "healthy"
    });

    // `down` ends both, with a word on stderr.
    env.run(&["down"]).ok();
    for follower in [text, json] {
        let r = follower.finish(LONG);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains("taken down"), "{r:?}");
    }
}

#[test]
fn ls_shows_every_project_with_its_counts_from_anywhere() {
    let env = Env::with_daemon();
    env.write(
        "a.yaml",
        &sh_project(
            "lsa",
            &[
                ("web", "exec sleep 300", ""),
                ("db", "exec sleep 300", ""),
                ("migrate", "true", "restart: no"),
            ],
        ),
    );
    env.write(
        "b.yaml",
        &sh_project("lsb", &[("solo", "exec sleep 300", "")]),
    );
    // No daemon yet: says so, exit 4.
    let r = env.run(&["ls"]).expect_code(4);
    assert!(r.stderr.contains("not running"), "{r:?}");

    // An empty daemon: nothing runs, which is an answer.
    env.run(&["daemon", "start"]).ok();
    let r = env.run(&["ls"]).ok();
    assert!(r.stdout.contains("no projects"), "{r:?}");
    assert_eq!(env.run(&["ls", "--json"]).ok().stdout.trim(), "[]");

    env.run(&["-f", "a.yaml", "up", "-d", "--wait", "--timeout", "30s"])
        .ok();
    env.run(&["-f", "b.yaml", "up", "-d", "--wait", "--timeout", "30s"])
        .ok();
    assert!(
        wait_until(LONG, || {
            env.run(&["-p", "lsa", "status", "--json", "migrate"])
                .stdout
                .contains("\"completed\"")
        }),
        "migrate never completed"
    );

    // From a directory without services.yaml.
    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let run_ls = |json: bool| {
        let mut cmd = env.cmd(if json { &["ls", "--json"] } else { &["ls"] });
        let out = cmd.current_dir(&elsewhere).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = run_ls(false);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
            .to_owned()
    };
    let a = row("lsa");
    assert!(a.contains("1 completed, 2 running"), "{table}");
    assert!(a.contains("a.yaml"), "{table}");
    assert!(a.contains(s(env.dir.path())), "{table}");
    assert!(row("lsb").contains("1 running"), "{table}");
    assert!(table.starts_with("PROJECT"), "{table}");

    let v: serde_json::Value = serde_json::from_str(&run_ls(true)).unwrap();
    let projects = v.as_array().unwrap();
    assert_eq!(projects.len(), 2, "{v}");
    let a = projects.iter().find(|p| p["project"] == "lsa").unwrap();
    assert_eq!(a["services"], 3, "{v}");
    assert_eq!(a["states"]["running"], 2, "{v}");
    assert_eq!(a["states"]["completed"], 1, "{v}");
    assert_eq!(
        a["files"][0].as_str(),
        Some(s(&env.dir.path().join("a.yaml"))),
        "{v}"
    );
    assert_eq!(a["working_dir"].as_str(), Some(s(env.dir.path())), "{v}");
    let b = projects.iter().find(|p| p["project"] == "lsb").unwrap();
    assert_eq!(b["states"]["running"], 1, "{v}");
    env.run(&["-p", "lsa", "down"]).ok();
    env.run(&["-p", "lsb", "down"]).ok();
}
