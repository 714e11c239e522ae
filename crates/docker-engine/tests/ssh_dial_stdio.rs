//! An engine reached the way a remote host's engine is: through a real `sshd`
//! and `docker system dial-stdio` on the other side (here the other side is
//! this machine, reached over ssh on loopback).
//!
//! Skips (with the reason printed) without sshd, ssh or an engine; fails under
//! HARNESS_REQUIRE_SSH=1 / HARNESS_REQUIRE_DOCKER=1.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use docker_engine::testing::{BUSYBOX, Cleanup, engine_or_skip, unique_name};
use docker_engine::{ContainerSpec, Docker, Transport, WaitCondition};

fn ssh_required() -> bool {
    std::env::var("HARNESS_REQUIRE_SSH").is_ok_and(|v| v == "1" || v == "true")
}

fn skip(why: &str) {
    assert!(!ssh_required(), "HARNESS_REQUIRE_SSH=1 but {why}");
    eprintln!("skipping ssh_dial_stdio: {why}");
}

/// A private sshd on a free loopback port, killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
    user: String,
    _dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) -> bool {
    Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-f"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

fn start_sshd() -> Result<Sshd, String> {
    let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("no sshd (Debian package openssh-server)")?;
    if Command::new("ssh").arg("-V").output().is_err() {
        return Err("no ssh client".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let host_key = dir.path().join("host_key");
    let key = dir.path().join("client_key");
    if !keygen(&host_key) || !keygen(&key) {
        return Err("ssh-keygen failed".into());
    }
    let authorized = dir.path().join("authorized_keys");
    std::fs::copy(key.with_extension("pub"), &authorized).map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile {}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n",
            host_key.display(),
            authorized.display(),
            dir.path().join("sshd.pid").display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {sshd}: {e}"))?;
    let user = String::from_utf8_lossy(
        &Command::new("id")
            .arg("-un")
            .output()
            .map_err(|e| e.to_string())?
            .stdout,
    )
    .trim()
    .to_owned();
    let mut sshd = Sshd {
        child,
        port,
        key,
        user,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = sshd.child.try_wait() {
            return Err(format!("sshd exited at start: {st}"));
        }
        if Instant::now() > deadline {
            return Err("sshd did not listen within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(sshd)
}

#[test]
fn an_engine_behind_ssh_dial_stdio_is_fully_usable() {
    smol::block_on(async {
        // The local engine must exist: it is the "remote" one.
        let Some(_) = engine_or_skip("ssh_dial_stdio").await else {
            return;
        };
        let sshd = match start_sshd() {
            Ok(s) => s,
            Err(why) => return skip(&why),
        };
        let argv: Vec<String> = [
            "ssh",
            "-p",
            &sshd.port.to_string(),
            "-i",
            &sshd.key.display().to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            &format!("{}@127.0.0.1", sshd.user),
            "docker",
            "system",
            "dial-stdio",
        ]
        .map(String::from)
        .to_vec();
        let docker = Docker::connect(Transport::Command(argv)).await.unwrap();
        docker.ping().await.unwrap();

        // A whole container round trip, each call over its own ssh connection.
        let cleanup = Cleanup::new();
        let name = unique_name("hde-ssh");
        cleanup.container(name.clone());
        let mut spec = ContainerSpec::new(BUSYBOX);
        spec.name = Some(name.clone());
        spec.cmd = Some(vec!["sh".into(), "-c".into(), "echo over-ssh".into()]);
        let id = docker.create_container(&spec).await.unwrap();
        docker.start_container(&id).await.unwrap();
        assert_eq!(
            docker
                .wait_container(&id, WaitCondition::NotRunning)
                .await
                .unwrap(),
            0
        );
        let lines = docker
            .logs(&id, &Default::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line.text(), "over-ssh");
        docker.remove_container(&id, true).await.unwrap();
    })
}

#[test]
fn an_unreachable_ssh_host_is_named_in_the_error() {
    smol::block_on(async {
        if Command::new("ssh").arg("-V").output().is_err() {
            return skip("no ssh client");
        }
        // Nothing listens on this port: ssh fails, the error names the command.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let argv: Vec<String> = [
            "ssh",
            "-p",
            &port.to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "127.0.0.1",
            "docker",
            "system",
            "dial-stdio",
        ]
        .map(String::from)
        .to_vec();
        let err = Docker::connect(Transport::Command(argv)).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ssh -p"), "{msg}");
        // ssh's own reason is part of the message.
        assert!(msg.contains("Connection refused"), "{msg}");
    })
}
