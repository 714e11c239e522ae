//! A changed configuration applied to a project that is up, through a real daemon and real
//! processes: only services whose configuration changed restart, removed ones stop, added
//! ones start, and a change of what does not affect a running instance restarts nothing.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{Env, alive, sh_project, wait_until};

const LONG: Duration = Duration::from_secs(60);

/// Each service's pid, by name (services without one are left out).
fn pids(env: &Env) -> BTreeMap<String, u32> {
    env.status()
        .iter()
        .filter_map(|r| {
            let pid = r["pid"].as_u64()? as u32;
            Some((r["name"].as_str()?.to_owned(), pid))
        })
        .collect()
}

/// Waits until `want` (names) are exactly the services running, each with a pid.
fn running(env: &Env, want: &[&str]) -> BTreeMap<String, u32> {
    let mut last = BTreeMap::new();
    let ok = wait_until(LONG, || {
        last = pids(env);
        last.keys().map(String::as_str).eq(want.iter().copied())
    });
    assert!(ok, "expected {want:?} running, saw {last:?}");
    last
}

const SLEEP: &str = "exec sleep 300";

#[test]
fn up_again_restarts_only_what_changed() {
    let env = Env::with_daemon();
    let yaml = |extra: &[(&str, &str, &str)]| {
        let mut all = vec![
            ("api", SLEEP, "env: { MODE: dev }"),
            ("db", SLEEP, ""),
            (
                "worker",
                SLEEP,
                "dependencies: { db: { condition: started } }",
            ),
        ];
        all.extend_from_slice(extra);
        sh_project("reload", &all)
    };
    env.write("services.yaml", &yaml(&[]));
    env.run(&["up", "-d", "--wait", "--timeout", "60s"]).ok();
    let before = running(&env, &["api", "db", "worker"]);

    // One service's environment: only it restarts.
    env.write(
        "services.yaml",
        &yaml(&[]).replace("MODE: dev", "MODE: prod"),
    );
    env.run(&["up", "-d", "--wait", "--timeout", "60s"]).ok();
    let after = running(&env, &["api", "db", "worker"]);
    assert_ne!(after["api"], before["api"], "api restarted");
    assert!(!alive(before["api"]));
    assert_eq!(after["db"], before["db"]);
    assert_eq!(after["worker"], before["worker"]);

    // Only a description: nothing restarts.
    let described = yaml(&[]).replace("MODE: dev", "MODE: prod").replace(
        "  db:\n",
        "  db:\n    description: the database\n    labels: { tier: data }\n",
    );
    env.write("services.yaml", &described);
    env.run(&["up", "-d", "--wait", "--timeout", "60s"]).ok();
    assert_eq!(running(&env, &["api", "db", "worker"]), after);

    // A service added starts; one removed stops; the rest keep running.
    let worker = sh_project(
        "x",
        &[(
            "worker",
            SLEEP,
            "dependencies: { db: { condition: started } }",
        )],
    );
    let extra = sh_project("x", &[("extra", SLEEP, "")]);
    let header = "name: x\nservices:\n".len();
    let changed = described.replace(&worker[header..], &extra[header..]);
    env.write("services.yaml", &changed);
    env.run(&["up", "-d", "--wait", "--timeout", "60s"]).ok();
    let last = running(&env, &["api", "db", "extra"]);
    assert!(!alive(after["worker"]), "worker stopped");
    assert_eq!(last["api"], after["api"]);
    assert_eq!(last["db"], after["db"]);
    env.run(&["down"]).ok();
}
