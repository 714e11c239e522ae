//! SshLayer against a real `sshd` started on a free port with generated keys,
//! running as the current user.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use command_executor::{
    Command, LaunchOptions, Layer, LocalLauncher, ProcessEvent, ProcessHandle, SshLayer,
};
use common::*;
use harness_core::ExitStatus;

const SSHD: &str = "/usr/sbin/sshd";

fn ssh_ready() -> bool {
    let ok = Path::new(SSHD).exists() && which("ssh-keygen") && which("ssh");
    if !ok {
        if std::env::var("HARNESS_REQUIRE_SSH").as_deref() == Ok("1") {
            panic!("sshd, ssh or ssh-keygen is missing and HARNESS_REQUIRE_SSH=1");
        }
        eprintln!("skipping: sshd, ssh or ssh-keygen is not installed");
    }
    ok
}

fn which(program: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn keygen(path: &Path) {
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen failed");
}

fn current_user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Sshd {
    _dir: tempfile::TempDir,
    client_key: PathBuf,
    port: u16,
    handle: ProcessHandle,
}

async fn start_sshd() -> Sshd {
    let dir = tempfile::tempdir().unwrap();
    let host_key = dir.path().join("host_key");
    let client_key = dir.path().join("client_key");
    keygen(&host_key);
    keygen(&client_key);
    let auth = dir.path().join("authorized_keys");
    std::fs::copy(client_key.with_extension("pub"), &auth).unwrap();
    if is_root() {
        // sshd started by root wants its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin yes\nLogLevel ERROR\n",
            host_key.display(),
            auth.display(),
            dir.path().join("sshd.pid").display()
        ),
    )
    .unwrap();
    let cmd = Command::new(SSHD)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(config.to_string_lossy());
    let (handle, _events) = LocalLauncher::new()
        .spawn(&cmd, LaunchOptions::default())
        .unwrap();
    eventually(30, "sshd to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    Sshd {
        _dir: dir,
        client_key,
        port,
        handle,
    }
}

fn is_root() -> bool {
    current_user() == "root"
}

impl Sshd {
    fn layer(&self) -> SshLayer {
        SshLayer::new("127.0.0.1")
            .port(self.port)
            .user(current_user())
            .identity_file(&self.client_key)
            .batch_mode(true)
            .connect_timeout(Duration::from_secs(20))
            .option("StrictHostKeyChecking", "no")
            .option("UserKnownHostsFile", "/dev/null")
            .option("LogLevel", "ERROR")
    }
}

#[test]
fn commands_run_on_the_remote_host_exactly() {
    if !ssh_ready() {
        return;
    }
    smol::block_on(async {
        let sshd = start_sshd().await;
        let _g = GroupGuard(sshd.handle.identity());
        let work = tempfile::tempdir().unwrap();
        let args = ["a b", "it's", "$HOME", "back\\slash", "new\nline", "ü", ""];
        let inner = Command::new("sh")
            .arg("-c")
            .arg("printf '%s|' \"$@\" \"$V\" \"$(pwd)\"; exit 4")
            .arg("sh")
            .args(args)
            .env("V", "x y'z")
            .current_dir(work.path());
        let cmd = sshd.layer().wrap(inner);
        let (h, mut ev) = LocalLauncher::new()
            .spawn(&cmd, LaunchOptions::default())
            .unwrap();
        let _g2 = GroupGuard(h.identity());
        let events = all_events(&mut ev, 60).await;
        assert_eq!(
            events.last(),
            Some(&ProcessEvent::Exited(ExitStatus::Code(4))),
            "{events:?}"
        );
        let text = lines(&events).join("\n");
        let mut want: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        want.push("x y'z".into());
        want.push(work.path().display().to_string());
        let mut expected = want.join("|");
        expected.push('|');
        assert_eq!(text, expected);
        sshd.handle.stop(Duration::from_secs(5)).await.unwrap();
    });
}

#[test]
fn connections_are_shared_through_a_control_master() {
    if !ssh_ready() {
        return;
    }
    smol::block_on(async {
        let sshd = start_sshd().await;
        let _g = GroupGuard(sshd.handle.identity());
        let sock_dir = tempfile::tempdir().unwrap();
        let sock = sock_dir.path().join("cm");
        let layer = sshd
            .layer()
            .control_master(command_executor::ControlMaster::Auto)
            .control_path(&sock)
            .control_persist(Duration::from_secs(30))
            .server_alive_interval(Duration::from_secs(5));
        // Whatever happens, the master is told to exit at the end.
        struct MasterGuard(Vec<String>);
        impl Drop for MasterGuard {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ssh")
                    .args(&self.0)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        let mut exit_args = vec!["-O".to_owned(), "exit".to_owned()];
        exit_args.extend(layer.options_args());
        exit_args.push(layer.host().to_owned());
        let _m = MasterGuard(exit_args);

        for word in ["first", "second"] {
            let cmd = layer.wrap(Command::new("echo").arg(word));
            let (_h, mut ev) = LocalLauncher::new()
                .spawn(&cmd, LaunchOptions::default())
                .unwrap();
            let events = all_events(&mut ev, 60).await;
            assert_eq!(lines(&events), [word], "{events:?}");
            assert_eq!(
                events.last(),
                Some(&ProcessEvent::Exited(ExitStatus::Code(0)))
            );
        }
        // The master is up and answers on its socket.
        let mut check = vec!["-O".to_owned(), "check".to_owned()];
        check.extend(layer.options_args());
        check.push(layer.host().to_owned());
        let st = std::process::Command::new("ssh")
            .args(&check)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "no control master on {}", sock.display());
    });
}
