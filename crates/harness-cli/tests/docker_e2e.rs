//! End to end with the real Docker engine: the built `harness` and `harnessd` binaries run a
//! project with a container `db` and a local process `app` that reaches it through
//! `${db.ip}:${db.port}`; the daemon is killed with SIGKILL and re-adopts the container
//! instead of starting a second one; `down` removes it.
//!
//! Skipped with a printed reason when the engine is unusable, a failure under
//! `HARNESS_REQUIRE_DOCKER=1`.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Env, alive, kill, libc_sigkill, wait_until};

const LONG: Duration = Duration::from_secs(60);
const TEST_IMAGE: &str = "harness-test/web:latest";
const LABEL_PROJECT: &str = "harness.project";

fn docker_required() -> bool {
    std::env::var("HARNESS_REQUIRE_DOCKER").is_ok_and(|v| v == "1" || v == "true")
}

/// Runs the docker CLI; `None` when it cannot run or fails.
fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when the engine answers and the test images are built; otherwise prints why the
/// test is skipped, or panics under `HARNESS_REQUIRE_DOCKER=1`.
fn engine_or_skip(test: &str) -> bool {
    let why = if docker(&["version", "--format", "{{.Server.Version}}"]).is_none() {
        Some("the Docker engine is unreachable (`docker version` failed)".to_string())
    } else {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docker-test-env/build.sh"
        );
        match Command::new("bash").arg(script).output() {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "building the test images failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(format!("cannot run the image build script: {e}")),
        }
    };
    match why {
        None => true,
        Some(why) if docker_required() => panic!("{test}: HARNESS_REQUIRE_DOCKER=1 but {why}"),
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// Removes every container of the project and its network when dropped, also when the
/// test fails.
struct ProjectCleanup {
    project: String,
}

impl Drop for ProjectCleanup {
    fn drop(&mut self) {
        for id in containers_of(&self.project, true) {
            let _ = docker(&["rm", "-f", "-v", &id]);
        }
        let _ = docker(&["network", "rm", &format!("harness-{}", self.project)]);
    }
}

/// The ids of the project's containers (running ones, or all with `all`).
fn containers_of(project: &str, all: bool) -> Vec<String> {
    let filter = format!("label={LABEL_PROJECT}={project}");
    let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &filter];
    if all {
        args.push("-a");
    }
    docker(&args)
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn by_name(rows: &[serde_json::Value]) -> BTreeMap<String, serde_json::Value> {
    rows.iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// A plain HTTP/1.0 GET; returns the status line and body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn stack(project: &str, port: u16) -> String {
    format!(
        r#"name: {project}
services:
  db:
    type: docker
    image: {TEST_IMAGE}
    command: ["sh", "-c", "echo db listening on 80; exec httpd -f -v -p 80 -h /www"]
    ports: ["{port}:80"]
    health_check:
      http: "http://${{db.ip}}:${{db.port}}/health"
      interval: 0.5s
  app:
    type: process
    binary: sh
    args: ["-c", "echo \"app reaches db at $$DB_ADDR\"; exec sleep 300"]
    env:
      DB_ADDR: "${{db.ip}}:${{db.port}}"
    dependencies:
      db: {{ condition: healthy }}
"#
    )
}

#[test]
fn docker_service_through_the_daemon_survives_kill_9_and_down_removes_it() {
    if !engine_or_skip("docker_service_through_the_daemon_survives_kill_9_and_down_removes_it") {
        return;
    }
    let project = format!("dke2e{}x{:08x}", std::process::id(), rand32());
    // Declared before `env`: dropped after it, so it removes what `down` left.
    let _cleanup = ProjectCleanup {
        project: project.clone(),
    };
    let env = Env::with_daemon();
    let port = free_port();
    env.write("services.yaml", &stack(&project, port));

    env.run(&["up", "-d", "--wait", "--timeout", "90s"]).ok();

    // status --json: db is a healthy docker service with its container.
    let rows = by_name(&env.status());
    let db = &rows["db"];
    assert_eq!(db["kind"], "docker", "{db}");
    assert_eq!(db["state"], "healthy", "{db}");
    let container = db["container_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no container id in {db}"))
        .to_string();
    assert!(!db["host"].as_str().unwrap_or("").is_empty(), "{db}");
    assert_eq!(rows["app"]["kind"], "process");
    assert_eq!(rows["app"]["host"], "local");
    assert_eq!(containers_of(&project, false), vec![container.clone()]);

    // The table shows the container.
    let table = env.run(&["status"]).ok().stdout;
    assert!(table.contains("docker"), "{table}");

    // app got db's address as a local process reaches it, and it answers.
    let mut line = String::new();
    assert!(
        wait_until(LONG, || {
            let out = env.run(&["logs", "app"]).stdout;
            match out.lines().find(|l| l.contains("app reaches db at ")) {
                Some(l) => {
                    line = l.to_string();
                    true
                }
                None => false,
            }
        }),
        "app never printed db's address"
    );
    let addr_text = line
        .rsplit("app reaches db at ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    let addr: SocketAddr = addr_text
        .parse()
        .unwrap_or_else(|e| panic!("`{addr_text}` is not an address: {e}"));
    assert_eq!(addr.port(), port, "{line}");
    let reply = http_get(addr, "/health").expect("GET db from the test");
    assert!(reply.starts_with("HTTP/1."), "{reply}");
    assert!(reply.lines().next().unwrap().contains(" 200"), "{reply}");

    // The container's output is in `logs db`.
    assert!(
        wait_until(LONG, || env
            .run(&["logs", "db"])
            .stdout
            .contains("db listening on 80")),
        "logs db: {}",
        env.run(&["logs", "db"]).stdout
    );

    // kill -9 the daemon; the container keeps running; a new daemon adopts it.
    let daemon = env.daemon_pid().expect("a daemon runs");
    kill(daemon, libc_sigkill());
    assert!(wait_until(LONG, || !alive(daemon)));
    assert_eq!(containers_of(&project, false), vec![container.clone()]);
    env.run(&["daemon", "start"]).ok();
    assert!(
        wait_until(LONG, || {
            let rows = by_name(&env.status());
            rows.get("db").is_some_and(|d| d["state"] == "healthy")
        }),
        "db is not healthy again after the restart: {:?}",
        env.status()
    );
    let rows = by_name(&env.status());
    assert_eq!(
        rows["db"]["container_id"].as_str(),
        Some(container.as_str()),
        "the same container is adopted: {:?}\ndaemon log:\n{}",
        std::fs::read_to_string(env.state.path().join("harnessd.log")).unwrap_or_default(),
        rows["db"]
    );
    assert_eq!(
        containers_of(&project, true),
        vec![container.clone()],
        "adopted, not duplicated"
    );
    let reply = http_get(addr, "/health").expect("GET db after the restart");
    assert!(reply.lines().next().unwrap().contains(" 200"), "{reply}");

    // down removes the container and the project network.
    env.run(&["down"]).ok();
    assert!(
        wait_until(LONG, || containers_of(&project, true).is_empty()),
        "containers left after down: {:?}",
        containers_of(&project, true)
    );
    assert!(
        docker(&["network", "inspect", &format!("harness-{project}")]).is_none(),
        "the project network is left after down"
    );
}

#[test]
fn exec_runs_in_the_container_with_its_environment_stdin_terminal_and_exit_code() {
    if !engine_or_skip("exec_runs_in_the_container") {
        return;
    }
    let project = format!("dkexec{}x{:08x}", std::process::id(), rand32());
    let _cleanup = ProjectCleanup {
        project: project.clone(),
    };
    let env = Env::with_daemon();
    env.write(
        "services.yaml",
        &format!(
            r#"name: {project}
services:
  box:
    type: docker
    image: harness-test/busybox:latest
    command: ["sleep", "300"]
    env:
      FOO: from the container
"#
        ),
    );
    env.run(&["up", "-d", "--wait", "--timeout", "90s"]).ok();

    // The container's environment and directory; the exit code comes back.
    let r = env
        .run(&[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "echo \"$FOO\"; echo err >&2; exit 7",
        ])
        .expect_code(7);
    assert_eq!(r.stdout, "from the container\n", "{r:?}");
    assert_eq!(r.stderr, "err\n", "{r:?}");

    // stdin reaches the command, and its end ends the command's stdin.
    let r = env.run_with_input(
        &["exec", "box", "--", "tr", "a-z", "A-Z"],
        b"into the box\n",
    );
    assert_eq!(r.ok().stdout, "INTO THE BOX\n");

    // A command the container does not have: a shell's code for it.
    let r = env.run(&["exec", "box", "--", "harness-no-such-command"]);
    assert!(r.code == 126 || r.code == 127, "{r:?}");

    // With a terminal: the command gets one of the terminal's size; -T: none. (An engine
    // older than API 1.42 takes the size just after the command started: it is waited for.)
    let script = "if [ -t 0 ]; then echo tty; i=0; \
                  until stty size 2>/dev/null | grep -q '^[1-9]' || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; \
                  stty size; else echo no-tty; fi; exit 4";
    let (out, code) = env.run_in_pty(&["exec", "box", "--", "sh", "-c", script], 33, 101);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("tty") && !out.contains("no-tty"), "{out}");
    assert!(out.contains("33 101"), "{out}");
    let (out, code) = env.run_in_pty(&["exec", "-T", "box", "--", "sh", "-c", script], 33, 101);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("no-tty"), "{out}");

    env.run(&["down"]).ok();
}

/// A little randomness for unique names, without a dependency.
fn rand32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}
