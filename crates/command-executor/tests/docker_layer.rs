//! DockerLayer against the real Docker engine and the local test image.

mod common;

use command_executor::{
    Command, DockerLayer, LaunchOptions, Layer, LocalLauncher, ProcessEvent, StdinMode,
};
use common::*;
use harness_core::ExitStatus;

const IMAGE: &str = "harness-test/busybox:latest";

/// Whether docker and the test image are usable; under CI
/// (`HARNESS_REQUIRE_DOCKER=1`) their absence is a failure.
fn docker_ready() -> bool {
    let ok = std::process::Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("HARNESS_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("docker or the image {IMAGE} is missing and HARNESS_REQUIRE_DOCKER=1");
        }
        eprintln!("skipping: docker or the image {IMAGE} is not available");
    }
    ok
}

/// A running container, removed on drop.
struct Container(String);

impl Container {
    fn start() -> Container {
        let name = format!(
            "harness-cx-test-{}-{}",
            std::process::id(),
            fastrand_suffix()
        );
        let st = std::process::Command::new("docker")
            .args(["run", "-d", "--rm", "--name", &name, IMAGE, "sleep", "300"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("docker runs");
        assert!(st.success(), "docker run failed");
        Container(name)
    }
}

fn fastrand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn docker_exec_runs_with_args_env_dir_and_stdin() {
    if !docker_ready() {
        return;
    }
    let c = Container::start();
    smol::block_on(async {
        let args = ["a b", "it's", "$HOME", "back\\slash", "new\nline", "ü"];
        let inner = Command::new("sh")
            .arg("-c")
            .arg("printf '%s\\0' \"$@\" \"$V\" \"$(pwd)\" \"${HOME-unset}\"; cat")
            .arg("sh")
            .args(args)
            .env("V", "x y'z")
            .env_remove("HOME")
            .current_dir("/tmp")
            .stdin(StdinMode::Piped);
        let cmd = DockerLayer::new(&c.0).wrap(inner);
        let (h, mut ev) = LocalLauncher::new()
            .spawn(&cmd, LaunchOptions::default())
            .unwrap();
        let _g = GroupGuard(h.identity());
        h.write_stdin(b"from stdin\n").await.unwrap();
        h.close_stdin().await.unwrap();
        let events = all_events(&mut ev, 60).await;
        assert_eq!(
            events.last(),
            Some(&ProcessEvent::Exited(ExitStatus::Code(0))),
            "{events:?}"
        );
        let mut bytes = Vec::new();
        for e in &events {
            if let ProcessEvent::Output(l) = e {
                bytes.extend_from_slice(&l.bytes);
                bytes.push(b'\n');
            }
        }
        let text = String::from_utf8(bytes).unwrap();
        let mut want: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        want.extend(["x y'z".into(), "/tmp".into(), "unset".into()]);
        let mut expected = want.join("\0");
        expected.push('\0');
        expected.push_str("from stdin\n");
        assert_eq!(text, expected);
    });
}
