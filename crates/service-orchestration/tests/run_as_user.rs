//! `user:` of a process service, resolved through the system user database: a
//! real user and groups made with `useradd`/`groupadd` for the test, real
//! processes started by the `ServiceManager`, which report who they run as.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_lite::StreamExt;
use service_orchestration::ManagerEvent;

const LONG: Duration = Duration::from_secs(60);

/// True when the test can run; false (with the reason printed) when it is
/// skipped. Under CI (`CI=true`) a missing privilege or tool is a failure.
fn can_manage_users() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let reason = if !rustix::process::geteuid().is_root() {
        Some("creating users needs root")
    } else if !["useradd", "groupadd", "userdel", "groupdel"]
        .iter()
        .all(|tool| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    {
        Some("useradd, groupadd, userdel or groupdel is missing")
    } else {
        None
    };
    match reason {
        None => true,
        Some(r) if ci => panic!("CI=true but {r}"),
        Some(r) => {
            eprintln!("skipping: {r}");
            false
        }
    }
}

fn run(tool: &str, args: &[&str]) {
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn id_of(db: &str, name: &str) -> u32 {
    let out = std::process::Command::new("getent")
        .args([db, name])
        .output()
        .expect("getent");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':')
        .nth(2)
        .and_then(|f| f.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {db} entry for {name}: {line:?}"))
}

/// A user with a primary group and a supplementary group, removed on drop
/// (also when the test fails).
struct TestUser {
    user: String,
    primary: String,
    extra: String,
    home: tempfile::TempDir,
}

impl TestUser {
    fn create() -> TestUser {
        // Unique per run, and short: user names are limited to 32 characters.
        let tag = format!("{}{}", std::process::id(), unique_suffix());
        let t = TestUser {
            user: format!("hu{tag}"),
            primary: format!("hp{tag}"),
            extra: format!("hx{tag}"),
            home: tempfile::Builder::new()
                .prefix("harness-home-")
                .tempdir()
                .unwrap(),
        };
        run("groupadd", &[&t.primary]);
        run("groupadd", &[&t.extra]);
        let home = t.home.path().to_str().unwrap().to_owned();
        run(
            "useradd",
            &[
                "-M", "-d", &home, "-s", "/bin/sh", "-g", &t.primary, "-G", &t.extra, &t.user,
            ],
        );
        t
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for (tool, name) in [
            ("userdel", &self.user),
            ("groupdel", &self.primary),
            ("groupdel", &self.extra),
        ] {
            let _ = std::process::Command::new(tool)
                .arg(name)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{:x}", nanos % 0x10000)
}

/// What each service printed first: `uid gid groups... | HOME USER LOGNAME`.
async fn first_lines(
    events: &mut service_orchestration::Subscription,
    services: &[&str],
) -> BTreeMap<String, String> {
    let mut got = BTreeMap::new();
    let collect = async {
        while got.len() < services.len() {
            match events.next().await {
                Some(ManagerEvent::Output { service, line, .. })
                    if services.contains(&service.as_str()) =>
                {
                    got.entry(service.to_string())
                        .or_insert_with(|| line.text().into_owned());
                }
                Some(_) => {}
                None => break,
            }
        }
    };
    futures_lite::future::or(collect, async {
        async_io::Timer::after(LONG).await;
    })
    .await;
    got
}

const REPORT: &str =
    r#"echo "$$(id -u) $$(id -g) $$(id -G) | $$HOME $$USER $$LOGNAME"; exec sleep 60"#;

#[test]
fn process_runs_as_the_configured_user_with_its_groups_and_environment() {
    if !can_manage_users() {
        return;
    }
    let u = TestUser::create();
    let (uid, gid, extra) = (
        id_of("passwd", &u.user),
        id_of("group", &u.primary),
        id_of("group", &u.extra),
    );
    let home = u.home.path().display().to_string();
    let svc = |name: &str, user: &str, env: &str| {
        format!(
            "  {name}:\n    type: process\n    binary: sh\n    args: [\"-c\", '{REPORT}']\n    restart: \"no\"\n    user: \"{user}\"\n{env}"
        )
    };
    let yaml = format!(
        "name: run-as\nservices:\n{}{}{}{}{}{}{}",
        svc("by-name", &u.user, ""),
        svc("name-and-group", &format!("{}:{}", u.user, u.extra), ""),
        svc("by-uid", &uid.to_string(), ""),
        svc("uid-and-gid", &format!("{uid}:{extra}"), ""),
        svc(
            "own-home",
            &u.user,
            "    env:\n      HOME: /elsewhere\n      USER: someone\n"
        ),
        svc("unknown-uid", "4000000:4000001", ""),
        svc("nobody-here", &format!("{}x", u.user), ""),
    );
    let project = harness_config::from_yaml_str(&yaml)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
        .project;
    smol::block_on(async {
        let m = manager(Arc::new(project), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        let mut events = m.subscribe();
        m.start_all().unwrap();
        let reporting = [
            "by-name",
            "name-and-group",
            "by-uid",
            "uid-and-gid",
            "own-home",
            "unknown-uid",
        ];
        let lines = first_lines(&mut events, &reporting).await;
        let user = &u.user;
        let want = |g: u32, groups: &str, env: &str| format!("{uid} {g} {groups} | {env}");
        // `id -G` lists the primary group first, then the others.
        let by_name = format!("{gid} {extra}");
        let expected: BTreeMap<String, String> = [
            (
                "by-name",
                want(gid, &by_name, &format!("{home} {user} {user}")),
            ),
            (
                "name-and-group",
                want(
                    extra,
                    &format!("{extra} {gid}"),
                    &format!("{home} {user} {user}"),
                ),
            ),
            (
                "by-uid",
                want(gid, &by_name, &format!("{home} {user} {user}")),
            ),
            (
                "uid-and-gid",
                want(
                    extra,
                    &format!("{extra} {gid}"),
                    &format!("{home} {user} {user}"),
                ),
            ),
            (
                "own-home",
                want(gid, &by_name, &format!("/elsewhere someone {user}")),
            ),
            ("unknown-uid", "4000000 4000001 4000001 | /  ".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(lines, expected);

        // A user the database does not know: the service fails, naming it.
        let reason = failure_reason(&m, "nobody-here", LONG).await;
        assert!(
            reason.contains(&format!("user `{user}x` does not exist")),
            "{reason}"
        );
        m.stop_all().await;
    });
}

#[test]
fn an_unknown_group_is_an_error_naming_it() {
    if !can_manage_users() {
        return;
    }
    let u = TestUser::create();
    let yaml = format!(
        "name: run-as-bad-group\nservices:\n  app:\n    type: process\n    binary: sh\n    args: [\"-c\", \"exit 0\"]\n    restart: \"no\"\n    user: \"{}:{}-missing\"\n",
        u.user, u.extra
    );
    let project = harness_config::from_yaml_str(&yaml).unwrap().project;
    smol::block_on(async {
        let m = manager(Arc::new(project), smol_spawner());
        let _guard = StopOnDrop(m.clone());
        m.start_all().unwrap();
        let reason = failure_reason(&m, "app", LONG).await;
        assert!(
            reason.contains(&format!("group `{}-missing` does not exist", u.extra)),
            "{reason}"
        );
    });
}
