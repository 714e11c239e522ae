//! The client against the real Docker engine of this machine.
//!
//! Skips (with the reason printed) when no engine is reachable, fails under
//! HARNESS_REQUIRE_DOCKER=1. Every container and network has a unique name and
//! is removed at the end, also on failure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use docker_engine::testing::{BUSYBOX, Cleanup, WEB, engine_or_skip, unique_name};
use docker_engine::{
    BuildSpec, ContainerSpec, Docker, DockerError, EventFilter, LogOptions, Mount, MountSource,
    PortSpec, Transport, WaitCondition,
};
use harness_core::{OutputStream, Signal};

const LONG: Duration = Duration::from_secs(30);

fn sh(script: &str) -> Option<Vec<String>> {
    Some(vec!["sh".into(), "-c".into(), script.into()])
}

/// A spec named uniquely, labelled for cleanup.
fn spec(cleanup: &Cleanup, image: &str, script: &str) -> ContainerSpec {
    let name = unique_name("hde");
    let mut s = ContainerSpec::new(image);
    s.name = Some(name.clone());
    s.cmd = sh(script);
    s.labels.insert("harness.test".into(), name.clone());
    cleanup.container(name);
    s
}

async fn run(docker: &Docker, cleanup: &Cleanup, s: &ContainerSpec) -> String {
    let id = docker.create_container(s).await.unwrap();
    cleanup.container(id.clone());
    docker.start_container(&id).await.unwrap();
    id
}

/// A deadline for a condition awaited in a loop.
struct Deadline(Instant, &'static str);

impl Deadline {
    fn new(what: &'static str) -> Deadline {
        Deadline(Instant::now() + LONG, what)
    }
    /// Fails the test past the deadline, else pauses briefly before the next check.
    async fn tick(&self) {
        assert!(Instant::now() < self.0, "timed out waiting for {}", self.1);
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + LONG;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

#[test]
fn ping_and_version_negotiation() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("ping_and_version_negotiation").await else {
            return;
        };
        docker.ping().await.unwrap();
        let v = docker.version().await.unwrap();
        let server = docker_engine::ApiVersion::parse(&v.api_version).unwrap();
        assert_eq!(
            docker.api_version(),
            server.min(docker_engine::MAX_API_VERSION)
        );
        assert!(!v.version.is_empty());
    })
}

#[test]
fn unreachable_engine_names_the_socket() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nothing.sock");
        let err = Docker::connect(Transport::Unix(sock.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, DockerError::Unreachable { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&sock.display().to_string()), "{msg}");
        assert!(msg.contains("not reachable"), "{msg}");
    })
}

#[test]
fn dial_stdio_transport_reaches_the_engine() {
    smol::block_on(async {
        let Some(_) = engine_or_skip("dial_stdio_transport_reaches_the_engine").await else {
            return;
        };
        // The same path an ssh-reached engine takes: a command's stdio as the connection.
        let t = Transport::Command(
            ["docker", "system", "dial-stdio"]
                .map(String::from)
                .to_vec(),
        );
        let docker = Docker::connect(t).await.unwrap();
        docker.ping().await.unwrap();
        docker.inspect_image(BUSYBOX).await.unwrap();
    })
}

#[test]
fn missing_image_says_no_registry_and_how_to_build() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("missing_image").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let image = format!("{}:none", unique_name("harness-test/absent"));
        let err = docker.inspect_image(&image).await.unwrap_err();
        assert!(matches!(err, DockerError::ImageNotFound { .. }), "{err}");
        let s = spec(&cleanup, &image, "true");
        let err = docker.create_container(&s).await.unwrap_err();
        assert!(matches!(err, DockerError::ImageNotFound { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&image), "{msg}");
        assert!(msg.contains("no registry"), "{msg}");
        assert!(msg.contains("docker load"), "{msg}");
    })
}

#[test]
fn unknown_runtime_is_named_never_a_fallback() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("unknown_runtime").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let mut s = spec(&cleanup, BUSYBOX, "true");
        s.runtime = Some("runsc-not-installed".into());
        let err = docker.create_container(&s).await.unwrap_err();
        match &err {
            DockerError::UnknownRuntime { runtime, .. } => {
                assert_eq!(runtime, "runsc-not-installed")
            }
            other => panic!("expected UnknownRuntime, got {other}"),
        }
        assert!(err.to_string().contains("runsc-not-installed"));
        assert!(err.to_string().contains("no fallback"));
    })
}

#[test]
fn container_lifecycle_create_start_inspect_list_stop_wait_remove() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("container_lifecycle").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let mut s = spec(
            &cleanup,
            BUSYBOX,
            "trap 'echo got-term; exit 7' TERM; echo \"$GREETING from $(pwd) as $(id -u)\"; while true; do sleep 0.1; done",
        );
        s.env.insert("GREETING".into(), "hello".into());
        s.working_dir = Some("/tmp".into());
        s.user = Some("65534".into());
        s.labels.insert("harness.project".into(), "p1".into());
        let tag = s.labels["harness.test"].clone();
        let id = run(&docker, &cleanup, &s).await;

        let i = docker.inspect_container(&id).await.unwrap();
        assert!(i.state.running);
        assert_eq!(i.short_name(), s.name.as_deref().unwrap());
        assert_eq!(i.label("harness.project"), Some("p1"));
        assert!(i.state.pid > 0);

        let listed = docker
            .list_containers(&[("harness.test", &tag)])
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
        assert_eq!(listed[0].state, "running");

        let mut logs = docker
            .logs(
                &id,
                &LogOptions {
                    follow: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let first = logs.next().await.unwrap().unwrap();
        assert_eq!(first.line.text(), "hello from /tmp as 65534");

        docker
            .stop_container(&id, Some(Signal::TERM), Duration::from_secs(20))
            .await
            .unwrap();
        let code = docker
            .wait_container(&id, WaitCondition::NotRunning)
            .await
            .unwrap();
        assert_eq!(code, 7, "the trap ran: TERM was delivered");
        let i = docker.inspect_container(&id).await.unwrap();
        assert!(!i.state.running);
        assert_eq!(i.state.exit_code, 7);
        // The followed log ends when the container stops.
        let rest: Vec<String> = logs
            .collect()
            .await
            .unwrap()
            .iter()
            .map(|l| l.line.text().into_owned())
            .collect();
        assert_eq!(rest, vec!["got-term".to_owned()]);

        docker.remove_container(&id, false).await.unwrap();
        let err = docker.inspect_container(&id).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
        // Removing again is fine.
        docker.remove_container(&id, true).await.unwrap();
    })
}

#[test]
fn stop_escalates_to_kill_after_grace() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("stop_escalates").await else {
            return;
        };
        let cleanup = Cleanup::new();
        // Ignores TERM: only SIGKILL ends it.
        let s = spec(
            &cleanup,
            BUSYBOX,
            "trap '' TERM; while true; do sleep 0.1; done",
        );
        let id = run(&docker, &cleanup, &s).await;
        docker
            .stop_container(&id, Some(Signal::TERM), Duration::from_millis(500))
            .await
            .unwrap();
        let i = docker.inspect_container(&id).await.unwrap();
        assert!(!i.state.running);
        assert_eq!(i.state.exit_code, 137);
        // Stopping a stopped container is fine.
        docker
            .stop_container(&id, Some(Signal::TERM), Duration::from_secs(1))
            .await
            .unwrap();
        docker
            .stop_container(&id, None, Duration::from_secs(1))
            .await
            .unwrap();
    })
}

#[test]
fn name_conflict_is_typed() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("name_conflict").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let s = spec(&cleanup, BUSYBOX, "true");
        let id = docker.create_container(&s).await.unwrap();
        cleanup.container(id);
        let err = docker.create_container(&s).await.unwrap_err();
        match &err {
            DockerError::NameConflict { name, .. } => assert_eq!(Some(name), s.name.as_ref()),
            other => panic!("expected NameConflict, got {other}"),
        }
    })
}

#[test]
fn port_already_in_use_is_typed() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("port_in_use").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let mut s = spec(&cleanup, BUSYBOX, "sleep 30");
        s.ports = vec![PortSpec::published(80, port)];
        let id = docker.create_container(&s).await.unwrap();
        cleanup.container(id.clone());
        let err = docker.start_container(&id).await.unwrap_err();
        assert!(matches!(err, DockerError::PortInUse { .. }), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    })
}

#[test]
fn hardening_contract_is_applied() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("hardening").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let volume = unique_name("hde-state");
        cleanup.volume(volume.clone());
        let mut s = spec(&cleanup, BUSYBOX, "sleep 60");
        s.read_only_rootfs = true;
        s.cap_drop = vec!["ALL".into()];
        s.no_new_privileges = true;
        s.mounts = vec![
            Mount {
                source: MountSource::Tmpfs(Some(16 << 20)),
                target: "/tmp".into(),
                read_only: false,
            },
            Mount {
                source: MountSource::Volume(volume.clone()),
                target: "/state".into(),
                read_only: false,
            },
        ];
        s.memory = Some(64 << 20);
        s.nano_cpus = Some(500_000_000);
        let id = run(&docker, &cleanup, &s).await;
        // Exposed but undeclared ports are not published: none declared here.
        let i = docker.inspect_container(&id).await.unwrap();
        assert!(i.host_config.readonly_rootfs);
        assert_eq!(i.host_config.cap_drop, Some(vec!["ALL".to_owned()]));
        let sec = i.host_config.security_opt.clone().unwrap_or_default();
        assert!(
            sec.iter().any(|o| o.starts_with("no-new-privileges")),
            "{sec:?}"
        );
        assert_eq!(i.host_config.memory, 64 << 20);
        assert_eq!(i.host_config.nano_cpus, 500_000_000);
        assert!(i.network_settings.ports.values().all(|b| b.is_none()));
        let writable: Vec<_> = i
            .mounts
            .iter()
            .filter(|m| m.rw)
            .map(|m| m.destination.clone())
            .collect();
        assert!(writable.contains(&"/state".to_owned()), "{writable:?}");

        let sh = |c: &str| vec!["sh".to_owned(), "-c".to_owned(), c.to_owned()];
        let root = docker.exec(&id, &sh("touch /rootfs-write")).await.unwrap();
        assert_ne!(root.exit_code, 0, "the root fs must be read-only");
        assert!(
            root.stderr().contains("Read-only file system"),
            "{:?}",
            root.stderr()
        );
        let tmp = docker
            .exec(&id, &sh("echo x > /tmp/f && cat /tmp/f"))
            .await
            .unwrap();
        assert_eq!((tmp.exit_code, tmp.stdout()), (0, "x".to_owned()));
        let state = docker
            .exec(&id, &sh("echo y > /state/f && cat /state/f"))
            .await
            .unwrap();
        assert_eq!((state.exit_code, state.stdout()), (0, "y".to_owned()));
        let caps = docker
            .exec(&id, &sh("grep CapEff /proc/self/status"))
            .await
            .unwrap();
        assert!(
            caps.stdout().ends_with("0000000000000000"),
            "{}",
            caps.stdout()
        );
    })
}

#[test]
fn exec_reports_output_and_exit_code() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("exec").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let s = spec(&cleanup, BUSYBOX, "sleep 60");
        let id = run(&docker, &cleanup, &s).await;
        let cmd: Vec<String> = ["sh", "-c", "echo out; echo err >&2; exit 3"]
            .map(String::from)
            .to_vec();
        let exec_id = docker.exec_create(&id, &cmd, None).await.unwrap();
        let lines = docker.exec_start(&exec_id).await.unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.line.stream == OutputStream::Stdout && l.line.text() == "out")
        );
        assert!(
            lines
                .iter()
                .any(|l| l.line.stream == OutputStream::Stderr && l.line.text() == "err")
        );
        let d = Deadline::new("exec exit code");
        let code = loop {
            let i = docker.exec_inspect(&exec_id).await.unwrap();
            if !i.running {
                break i.exit_code;
            }
            d.tick().await;
        };
        assert_eq!(code, Some(3));
        let out = docker.exec(&id, &["true".to_owned()]).await.unwrap();
        assert_eq!(out.exit_code, 0);
        let missing = docker
            .exec(&id, &["/no/such/binary".to_owned()])
            .await
            .unwrap();
        assert_ne!(missing.exit_code, 0);
    })
}

#[test]
fn attached_exec_takes_stdin_and_gives_output_and_exit_code() {
    use docker_engine::{ExecSpec, Frames};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    smol::block_on(async {
        let Some(docker) = engine_or_skip("attached_exec").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let s = spec(&cleanup, BUSYBOX, "sleep 60");
        let id = run(&docker, &cleanup, &s).await;

        // Without a terminal: stdin is read to its end, stdout and stderr come in frames.
        let exec_id = docker
            .exec_create_with(
                &id,
                &ExecSpec {
                    cmd: [
                        "sh",
                        "-c",
                        "tr a-z A-Z; echo \"$GREETING in $(pwd)\" >&2; exit 5",
                    ]
                    .map(String::from)
                    .to_vec(),
                    stdin: true,
                    working_dir: Some("/tmp".into()),
                    env: vec!["GREETING=hello".into()],
                    ..ExecSpec::default()
                },
            )
            .await
            .unwrap();
        let mut stream = docker.exec_attach(&exec_id, false).await.unwrap();
        stream.write_all(b"shout\n").await.unwrap();
        stream.close().await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for (stream, bytes) in Frames::new(false).push(&raw) {
            match stream {
                OutputStream::Stderr => err.extend(bytes),
                _ => out.extend(bytes),
            }
        }
        assert_eq!(String::from_utf8_lossy(&out), "SHOUT\n");
        assert_eq!(String::from_utf8_lossy(&err), "hello in /tmp\n");
        assert_eq!(docker.exec_exit_code(&exec_id).await.unwrap(), 5);

        // With a terminal: one raw stream, and the terminal has the size it is given.
        let exec_id = docker
            .exec_create_with(
                &id,
                &ExecSpec {
                    cmd: ["sh", "-c", "read x; stty size; echo got $x"]
                        .map(String::from)
                        .to_vec(),
                    stdin: true,
                    tty: true,
                    ..ExecSpec::default()
                },
            )
            .await
            .unwrap();
        let mut stream = docker.exec_attach(&exec_id, true).await.unwrap();
        docker.exec_resize(&exec_id, 33, 101).await.unwrap();
        stream.write_all(b"it\r").await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("33 101"), "{text:?}");
        assert!(text.contains("got it"), "{text:?}");
        assert_eq!(docker.exec_exit_code(&exec_id).await.unwrap(), 0);

        // An exec id the engine does not know.
        assert!(matches!(
            docker.exec_attach("no-such-exec", false).await,
            Err(DockerError::NotFound { .. })
        ));
    })
}

#[test]
fn logs_are_demultiplexed_in_order() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("logs_in_order").await else {
            return;
        };
        let cleanup = Cleanup::new();
        // Writes alternate between the streams, with a pause so each write is
        // recorded before the next one is made.
        let s = spec(
            &cleanup,
            BUSYBOX,
            "for i in 1 2 3 4; do echo out$i; sleep 0.2; echo err$i >&2; sleep 0.2; done; printf 'no-newline'",
        );
        let id = run(&docker, &cleanup, &s).await;
        docker
            .wait_container(&id, WaitCondition::NotRunning)
            .await
            .unwrap();
        let lines = docker
            .logs(
                &id,
                &LogOptions {
                    timestamps: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let got: Vec<(OutputStream, String)> = lines
            .iter()
            .map(|l| (l.line.stream, l.line.text().into_owned()))
            .collect();
        let mut want = Vec::new();
        for i in 1..=4 {
            want.push((OutputStream::Stdout, format!("out{i}")));
            want.push((OutputStream::Stderr, format!("err{i}")));
        }
        want.push((OutputStream::Stdout, "no-newline".into()));
        assert_eq!(got, want);
        let stamps: Vec<&str> = lines
            .iter()
            .map(|l| l.timestamp.as_deref().unwrap())
            .collect();
        let mut sorted = stamps.clone();
        sorted.sort();
        assert_eq!(stamps, sorted, "timestamps follow the order");
        // since: from the 5th line's own timestamp on.
        let t5 = docker_engine::parse_timestamp(stamps[4]).expect("an engine timestamp");
        let from5 = docker
            .logs(
                &id,
                &LogOptions {
                    since: Some(t5),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let from5: Vec<String> = from5.iter().map(|l| l.line.text().into_owned()).collect();
        assert_eq!(from5, ["out3", "err3", "out4", "err4", "no-newline"]);
        // tail
        let last = docker
            .logs(
                &id,
                &LogOptions {
                    tail: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].line.text(), "no-newline");
    })
}

#[test]
fn a_container_killed_from_outside_is_seen_in_events() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("events_kill").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let s = spec(&cleanup, BUSYBOX, "sleep 60");
        let tag = s.labels["harness.test"].clone();
        let mut events = docker
            .events(&EventFilter {
                types: vec!["container".into()],
                labels: vec![("harness.test".into(), tag.clone())],
                ..Default::default()
            })
            .await
            .unwrap();
        let id = run(&docker, &cleanup, &s).await;
        let out = std::process::Command::new("docker")
            .args(["kill", &id])
            .output()
            .unwrap();
        assert!(out.status.success(), "docker kill: {out:?}");
        let mut actions = Vec::new();
        let die = futures_lite::future::or(
            async {
                while let Some(ev) = events.next().await {
                    let ev = ev.unwrap();
                    assert_eq!(ev.actor.id, id, "only our container's events");
                    assert_eq!(ev.attribute("harness.test"), Some(tag.as_str()));
                    actions.push(ev.action.clone());
                    if ev.action == "die" {
                        return Some(ev);
                    }
                }
                None
            },
            async {
                async_io::Timer::after(LONG).await;
                None
            },
        )
        .await
        .expect("a die event");
        assert_eq!(die.exit_code(), Some(137));
        assert!(actions.contains(&"start".to_owned()), "{actions:?}");
        assert!(actions.contains(&"kill".to_owned()), "{actions:?}");
    })
}

#[test]
fn build_from_a_dockerfile_streams_progress() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("build").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Dockerfile.test"),
            format!("FROM {BUSYBOX}\nARG WHO=nobody\nCOPY greeting.txt /greeting.txt\nRUN echo \"built by $WHO\" > /who.txt\nCMD [\"cat\", \"/greeting.txt\", \"/who.txt\"]\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("greeting.txt"), "hello from the context\n").unwrap();
        let tag = format!("{}:t", unique_name("harness-test/built"));
        cleanup.image(tag.clone());
        let mut progress = Vec::new();
        let id = docker
            .build_image(
                &BuildSpec {
                    context: dir.path().to_owned(),
                    dockerfile: Some("Dockerfile.test".into()),
                    tag: tag.clone(),
                    build_args: BTreeMap::from([("WHO".into(), "harness".into())]),
                    labels: BTreeMap::from([("harness.test".into(), "build".into())]),
                },
                |line| progress.push(line.to_owned()),
            )
            .await
            .unwrap();
        assert!(id.starts_with("sha256:"), "{id}");
        assert!(
            progress.iter().any(|l| l.contains("Step 1/")),
            "{progress:?}"
        );
        assert_eq!(docker.inspect_image(&tag).await.unwrap().id, id);

        let mut s = spec(&cleanup, &tag, "");
        s.cmd = None;
        let cid = run(&docker, &cleanup, &s).await;
        assert_eq!(
            docker
                .wait_container(&cid, WaitCondition::NotRunning)
                .await
                .unwrap(),
            0
        );
        let text: Vec<String> = docker
            .logs(&cid, &LogOptions::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
            .iter()
            .map(|l| l.line.text().into_owned())
            .collect();
        assert_eq!(text, vec!["hello from the context", "built by harness"]);

        // A failing step is a typed error carrying the builder's message.
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!("FROM {BUSYBOX}\nRUN exit 42\n"),
        )
        .unwrap();
        let bad = format!("{}:t", unique_name("harness-test/bad"));
        cleanup.image(bad.clone());
        let err = docker
            .build_image(
                &BuildSpec {
                    context: dir.path().to_owned(),
                    tag: bad,
                    ..Default::default()
                },
                |_| {},
            )
            .await
            .unwrap_err();
        assert!(matches!(err, DockerError::Build { .. }), "{err}");
        assert!(err.to_string().contains("42"), "{err}");
        docker.remove_image(&tag, true).await.unwrap();
        assert!(docker.inspect_image(&tag).await.unwrap_err().is_not_found());
    })
}

#[test]
fn build_context_honours_dockerignore() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("build_dockerignore").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("target/debug")).unwrap();
        std::fs::write(p.join("target/debug/huge"), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(p.join("app.txt"), "app").unwrap();
        std::fs::write(p.join("debug.log"), "").unwrap();
        std::fs::write(p.join(".dockerignore"), "target\n*.log\n").unwrap();
        std::fs::write(
            p.join("Dockerfile"),
            format!("FROM {BUSYBOX}\nCOPY . /ctx\nCMD [\"find\", \"/ctx\"]\n"),
        )
        .unwrap();
        let tag = format!("{}:t", unique_name("harness-test/ctx"));
        cleanup.image(tag.clone());
        docker
            .build_image(
                &BuildSpec {
                    context: p.to_owned(),
                    tag: tag.clone(),
                    ..Default::default()
                },
                |_| {},
            )
            .await
            .unwrap();
        let mut s = spec(&cleanup, &tag, "");
        s.cmd = None;
        let id = run(&docker, &cleanup, &s).await;
        docker
            .wait_container(&id, WaitCondition::NotRunning)
            .await
            .unwrap();
        let mut files: Vec<String> = docker
            .logs(&id, &LogOptions::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
            .iter()
            .map(|l| l.line.text().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "/ctx",
                "/ctx/.dockerignore",
                "/ctx/Dockerfile",
                "/ctx/app.txt"
            ]
        );
    })
}

#[test]
fn networks_create_connect_inspect_disconnect_remove() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("networks").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let net = unique_name("hde-net");
        cleanup.network(net.clone());
        let labels = BTreeMap::from([("harness.project".to_owned(), "p".to_owned())]);
        let net_id = docker.create_network(&net, &labels, None).await.unwrap();
        let err = docker
            .create_network(&net, &labels, None)
            .await
            .unwrap_err();
        assert!(matches!(err, DockerError::NameConflict { .. }), "{err}");

        let mut server = spec(&cleanup, BUSYBOX, "httpd -f -p 8080 -h /www");
        server.network = Some(net.clone());
        server.aliases = vec!["web".into()];
        let sid = run(&docker, &cleanup, &server).await;
        let si = docker.inspect_container(&sid).await.unwrap();
        let ip = si.ip(Some(&net)).expect("an IP on the project network");
        assert_eq!(si.ip(None), Some(ip));

        let client = spec(&cleanup, BUSYBOX, "sleep 60");
        let cid = run(&docker, &cleanup, &client).await;
        docker
            .connect_network(&net, &cid, &["client".into()])
            .await
            .unwrap();
        let ni = docker.inspect_network(&net).await.unwrap();
        assert_eq!(ni.id, net_id);
        assert_eq!(ni.driver, "bridge");
        let attached = ni.containers.unwrap_or_default();
        assert!(attached.contains_key(&sid) && attached.contains_key(&cid));
        // Reach the server by alias and by IP from the other container.
        let get = |host: String| {
            vec![
                "wget".to_owned(),
                "-q".into(),
                "-O".into(),
                "-".into(),
                format!("http://{host}:8080/health"),
            ]
        };
        let d = Deadline::new("server answers on the network by alias");
        loop {
            let out = docker.exec(&cid, &get("web".into())).await.unwrap();
            if out.exit_code == 0 && out.stdout() == "ok" {
                break;
            }
            d.tick().await;
        }
        let by_ip = docker.exec(&cid, &get(ip.to_string())).await.unwrap();
        assert_eq!(by_ip.stdout(), "ok");

        docker.disconnect_network(&net, &cid, false).await.unwrap();
        let ni = docker.inspect_network(&net).await.unwrap();
        assert!(!ni.containers.unwrap_or_default().contains_key(&cid));
        docker.remove_container(&sid, true).await.unwrap();
        docker.remove_network(&net).await.unwrap();
        assert!(
            docker
                .inspect_network(&net)
                .await
                .unwrap_err()
                .is_not_found()
        );
        docker.remove_network(&net).await.unwrap();
    })
}

#[test]
fn published_port_is_reachable_on_loopback() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("published_port").await else {
            return;
        };
        let cleanup = Cleanup::new();
        let mut s = spec(&cleanup, WEB, "");
        s.cmd = None;
        s.ports = vec![PortSpec::published(80, 0), PortSpec::exposed(81)];
        let id = run(&docker, &cleanup, &s).await;
        let i = docker.inspect_container(&id).await.unwrap();
        let port = i.published_port(80).expect("80 published");
        assert_eq!(i.published_port(81), None, "81 is exposed, not published");
        let d = Deadline::new("HTTP on the published port");
        let body = loop {
            use futures_lite::{AsyncReadExt, AsyncWriteExt};
            let mut body = String::new();
            if let Ok(mut c) = async_net::TcpStream::connect(("127.0.0.1", port)).await
                && c.write_all(b"GET /health HTTP/1.0\r\n\r\n").await.is_ok()
            {
                let _ = c.read_to_string(&mut body).await;
                if body.ends_with("ok\n") {
                    break body;
                }
            }
            d.tick().await;
        };
        assert!(body.starts_with("HTTP/1."), "{body}");
        // The engine's own healthcheck of the image turns healthy.
        eventually("engine healthcheck", || {
            let (docker, id) = (docker.clone(), id.clone());
            async move {
                let i = docker.inspect_container(&id).await.unwrap();
                i.state.health.map(|h| h.status) == Some("healthy".into())
            }
        })
        .await;
    })
}

#[test]
fn key_calls_under_tokio() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(docker) = engine_or_skip("key_calls_under_tokio").await else {
            return;
        };
        let cleanup = Cleanup::new();
        docker.ping().await.unwrap();
        let s = spec(&cleanup, BUSYBOX, "echo ready; sleep 60");
        let tag = s.labels["harness.test"].clone();
        let mut events = docker
            .events(&EventFilter {
                labels: vec![("harness.test".into(), tag)],
                actions: vec!["die".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let id = run(&docker, &cleanup, &s).await;
        let out = docker
            .exec(&id, &["echo".to_owned(), "hi".to_owned()])
            .await
            .unwrap();
        assert_eq!((out.exit_code, out.stdout()), (0, "hi".to_owned()));
        let mut logs = docker
            .logs(
                &id,
                &LogOptions {
                    follow: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(logs.next().await.unwrap().unwrap().line.text(), "ready");
        docker.kill_container(&id, Signal::KILL).await.unwrap();
        let ev = tokio::time::timeout(LONG, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.action, "die");
        assert_eq!(ev.exit_code(), Some(137));
    })
}
