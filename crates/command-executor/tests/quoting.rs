//! Quoting is exact: arguments, environment values and directories survive a
//! trip through `sh -c` byte for byte, also through stacked layers.

use std::process::Stdio;

use command_executor::{Command, DockerLayer, Layer, SshLayer, shell_command_line, shell_quote};
use proptest::prelude::*;

/// Runs `line` with `sh -c` and returns its stdout.
fn run_sh(line: &str) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(line)
        .stdin(Stdio::null())
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "sh -c {line:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn nul_split(bytes: &[u8]) -> Vec<String> {
    let mut parts: Vec<String> = bytes
        .split(|&b| b == 0)
        .map(|p| String::from_utf8(p.to_vec()).expect("utf-8 back"))
        .collect();
    assert_eq!(parts.pop().as_deref(), Some(""), "output ends with NUL");
    parts
}

/// Strings full of what shells treat specially, plus arbitrary unicode (no NUL:
/// it cannot be in an argument).
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ '\"$`\\\\\n\t!*?~#&;|<>(){}\\[\\]=%^a-z0-9-]{0,16}",
        "[^\u{0}]{0,16}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn args_round_trip_through_sh(args in proptest::collection::vec(nasty(), 1..6)) {
        let cmd = Command::new("printf").arg("%s\\0").args(args.clone());
        let back = nul_split(&run_sh(&shell_command_line(&cmd)));
        prop_assert_eq!(back, args);
    }

    #[test]
    fn one_quoted_word_round_trips(arg in nasty()) {
        let back = nul_split(&run_sh(&format!("printf '%s\\0' {}", shell_quote(&arg))));
        prop_assert_eq!(back, vec![arg]);
    }

    #[test]
    fn env_values_round_trip(value in nasty()) {
        let cmd = Command::new("sh")
            .arg("-c")
            .arg("printf '%s\\0' \"$HARNESS_Q\"")
            .env("HARNESS_Q", value.clone());
        let back = nul_split(&run_sh(&shell_command_line(&cmd)));
        prop_assert_eq!(back, vec![value]);
    }
}

#[test]
fn directory_with_specials_round_trips() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("a dir 'with' $pecial \"chars\"\nand ü");
    std::fs::create_dir(&dir).unwrap();
    let cmd = Command::new("pwd").current_dir(&dir);
    let out = run_sh(&shell_command_line(&cmd));
    assert_eq!(out, format!("{}\n", dir.display()).into_bytes());
}

#[test]
fn ssh_sends_exactly_the_shell_line() {
    let cmd = Command::new("printf")
        .arg("%s\\0")
        .arg("it's")
        .env("A", "$B");
    let wrapped = SshLayer::new("host").wrap(cmd.clone());
    assert_eq!(
        wrapped.get_args().last().unwrap(),
        &shell_command_line(&cmd)
    );
    assert_eq!(wrapped.get_args()[wrapped.get_args().len() - 2], "--");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// docker exec on a remote host: the argv the (stand-in) docker client gets
    /// on the other side of `sh -c` is exactly the one the docker layer built.
    #[test]
    fn stacked_docker_then_ssh_round_trips(args in proptest::collection::vec(nasty(), 1..5), value in nasty()) {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-docker");
        std::fs::write(&fake, "#!/bin/sh\nprintf '%s\\0' \"$@\"\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let inner = Command::new("prog").args(args.clone()).env("V", value.clone());
        let docker = DockerLayer::new("ctr").program(fake.to_string_lossy()).wrap(inner);
        let expected: Vec<String> = docker.get_args().to_vec();
        let ssh = SshLayer::new("host").wrap(docker);
        let line = ssh.get_args().last().unwrap().clone();
        let back = nul_split(&run_sh(&line));
        prop_assert_eq!(back, expected);
    }
}
