//! `harness up --watch` against a real daemon, real processes and real files: saved edits of
//! services.yaml, of an env_file and under a service's `watch:` path are applied while it runs.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{Env, sh_project, wait_until};

const LONG: Duration = Duration::from_secs(60);
const SLEEP: &str = "exec sleep 300";

fn pids(env: &Env) -> BTreeMap<String, u32> {
    env.status()
        .iter()
        .filter_map(|r| Some((r["name"].as_str()?.to_owned(), r["pid"].as_u64()? as u32)))
        .collect()
}

/// Waits until every service of `want` runs with a pid, returning them all.
fn running(env: &Env, want: &[&str]) -> BTreeMap<String, u32> {
    let mut last = BTreeMap::new();
    let ok = wait_until(LONG, || {
        last = pids(env);
        last.keys().map(String::as_str).eq(want.iter().copied())
    });
    assert!(ok, "expected {want:?} running, saw {last:?}");
    last
}

fn yaml(mode: &str, extra: bool) -> String {
    let api = format!("env_file: api.env\nenv: {{ MODE: {mode} }}");
    let mut services = vec![
        ("api", SLEEP, api.as_str()),
        ("db", SLEEP, ""),
        (
            "worker",
            SLEEP,
            "watch: [{ path: src, ignore: [\"*.tmp\"] }]",
        ),
    ];
    if extra {
        services.push(("extra", SLEEP, ""));
    }
    sh_project("watched", &services)
}

#[test]
fn saved_edits_are_applied_while_up_watches() {
    let env = Env::with_daemon();
    env.write("api.env", "GREETING=hello\n");
    std::fs::create_dir(env.dir.path().join("src")).unwrap();
    env.write("services.yaml", &yaml("a", false));
    let mut up = env.spawn(&["up", "-d", "--wait", "--timeout", "60s", "--watch"]);
    up.wait_line(LONG, |l| l.starts_with("watching project watched"));
    let first = running(&env, &["api", "db", "worker"]);
    let reloads = |l: &str| l.contains(" changed: ");

    // Three saves within a second: one reload that restarts api only.
    for mode in ["b", "c", "d"] {
        env.write("services.yaml", &yaml(mode, false));
        std::thread::sleep(Duration::from_millis(200));
    }
    let line = up.wait_line(LONG, reloads);
    assert_eq!(line, "services.yaml changed: restarting api");
    let second = running(&env, &["api", "db", "worker"]);
    assert_ne!(second["api"], first["api"]);
    assert_eq!(second["db"], first["db"]);
    assert_eq!(second["worker"], first["worker"]);

    // An invalid edit: diagnostics with their location, nothing restarted.
    env.write(
        "services.yaml",
        &yaml("e", false).replace("binary: sh", "binary: [sh"),
    );
    let invalid = up.wait_line(LONG, |l| l.contains("invalid, nothing changed"));
    assert_eq!(invalid, "services.yaml changed: invalid, nothing changed");
    up.wait_line(LONG, |l| l.contains("services.yaml:"));
    // (status reads services.yaml too, so what runs is compared once it is fixed.)

    // The fix applies, with a service added.
    env.write("services.yaml", &yaml("d", true));
    let line = up.wait_line(LONG, |l| l.contains("starting extra"));
    assert_eq!(line, "services.yaml changed: starting extra");
    let third = running(&env, &["api", "db", "extra", "worker"]);
    assert_eq!(
        third["api"], second["api"],
        "the invalid edit restarted nothing"
    );
    assert_eq!(third["worker"], second["worker"]);

    // The env_file: its service restarts.
    env.write("api.env", "GREETING=bonjour\n");
    let line = up.wait_line(LONG, |l| l.starts_with("api.env changed"));
    assert_eq!(line, "api.env changed: restarting api");
    let fourth = running(&env, &["api", "db", "extra", "worker"]);
    assert_ne!(fourth["api"], third["api"]);
    assert_eq!(fourth["worker"], third["worker"]);

    // A file under worker's watch path: only worker restarts (an ignored one does nothing).
    env.write("src/ignored.tmp", "x");
    env.write("src/code.txt", "x");
    let line = up.wait_line(LONG, |l| l.contains("restarting worker"));
    assert_eq!(line, "src/code.txt changed: restarting worker");
    let fifth = running(&env, &["api", "db", "extra", "worker"]);
    assert_ne!(fifth["worker"], fourth["worker"]);
    assert_eq!(fifth["api"], fourth["api"]);
    assert_eq!(fifth["db"], first["db"]);

    // Every reload line, in order: the burst was one reload.
    support::kill(up.pid(), 2);
    let run = up.finish(LONG);
    let lines: Vec<&str> = run.stdout.lines().filter(|l| reloads(l)).collect();
    assert_eq!(
        lines,
        [
            "services.yaml changed: restarting api",
            "services.yaml changed: invalid, nothing changed",
            "services.yaml changed: starting extra",
            "api.env changed: restarting api",
            "src/code.txt changed: restarting worker",
        ],
        "{}",
        run.stdout
    );
    // Ctrl-C stopped watching only.
    assert_eq!(running(&env, &["api", "db", "extra", "worker"]), fifth);
}
