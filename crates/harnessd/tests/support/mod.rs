//! Real daemon processes for tests, each in its own temporary state dir.
#![allow(dead_code)]

pub mod disk;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_net::TcpStream;
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
use harness_protocol::{CertPaths, ServerMessage, StateDir};

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct TestDaemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    /// Extra environment of the daemon process.
    pub env: Vec<(String, String)>,
}

impl TestDaemon {
    pub fn start() -> TestDaemon {
        TestDaemon::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> TestDaemon {
        TestDaemon::start_with_env(args, &[])
    }

    /// A daemon with `env` added to its environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        let mut d = TestDaemon {
            child: None,
            dir,
            state,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn(args);
        d
    }

    /// Starts a daemon process on this state dir and waits until it is ready.
    pub fn spawn(&mut self, args: &[&str]) {
        let child = self.command(args).spawn().expect("spawn harnessd");
        let pid = child.id();
        self.child = Some(child);
        self.wait_ready(pid);
    }

    /// Starts a daemon process on this state dir through `sh -c`, after the
    /// shell commands `prelude` (e.g. `ulimit -n 1024`), and waits until it is ready.
    pub fn spawn_after(&mut self, prelude: &str, args: &[&str]) {
        let plain = self.command(args);
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("{prelude} && exec \"$0\" \"$@\""))
            .arg(plain.get_program())
            .args(plain.get_args())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("HARNESS_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = c.spawn().expect("spawn harnessd");
        let pid = child.id();
        self.child = Some(child);
        self.wait_ready(pid);
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_harnessd"));
        c.arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("HARNESS_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn wait_ready(&mut self, pid: u32) {
        let until = Instant::now() + DEADLINE;
        let sd = StateDir::new(&self.state);
        loop {
            if sd.read_address().is_ok_and(|a| a.pid == pid) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("harnessd exited before it was ready: {status}");
            }
            assert!(
                Instant::now() < until,
                "harnessd not ready within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn address(&self) -> std::net::SocketAddr {
        StateDir::new(&self.state)
            .read_address()
            .expect("address file")
            .address
    }

    pub fn certs(&self) -> CertPaths {
        CertPaths::of(&StateDir::new(&self.state))
    }

    /// Waits for the daemon process to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < until,
                "harnessd did not exit within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("kill");
    }

    /// Whether the daemon process is still alive.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The daemon's cgroups (it runs in this test's cgroup), with what
        // still runs in them.
        let name = harnessd::targets::cgroup_name(&self.state);
        if let Ok(dir) = command_executor::CgroupRoot::locate(&name)
            && dir.exists()
            && let Ok(root) = command_executor::CgroupRoot::at(dir)
        {
            root.remove_all();
        }
    }
}

pub type Ws = WebSocketStream<futures_rustls::client::TlsStream<TcpStream>>;

/// A TLS + WebSocket connection with an explicit TLS config, no protocol handshake.
pub async fn raw_ws(
    address: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Ws, String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let tls = futures_rustls::TlsConnector::from(tls)
        .connect(harness_protocol::tls::server_name(), tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (ws, _) = async_tungstenite::client_async_with_config(
        format!("wss://localhost:{}/v1", address.port()),
        tls,
        Some(harness_protocol::ws_config()),
    )
    .await
    .map_err(|e| format!("ws: {e}"))?;
    Ok(ws)
}

/// Reads the next protocol message, skipping pings; None when the connection ends.
pub async fn next_message(ws: &mut Ws) -> Option<ServerMessage> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return Some(
                        serde_json::from_str(t.as_str()).expect("daemon sends valid JSON"),
                    );
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    };
    futures_lite::future::or(read, async {
        async_io::Timer::after(DEADLINE).await;
        panic!("no message from harnessd within {DEADLINE:?}");
    })
    .await
}

/// A raw connection past the protocol handshake.
pub async fn handshaken(d: &TestDaemon) -> Ws {
    let tls = harness_protocol::tls::client_config(&d.certs()).expect("client config");
    let mut ws = raw_ws(d.address(), tls).await.expect("connect");
    ws.send(Message::text(harness_protocol::encode(
        &harness_protocol::codec::hello("test"),
    )))
    .await
    .expect("send hello");
    match next_message(&mut ws).await {
        Some(ServerMessage::Welcome(_)) => ws,
        other => panic!("expected welcome, got {other:?}"),
    }
}

pub fn file_mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

/// Kills the process groups of service processes a test leaves behind.
pub struct Pids(pub Vec<u32>);

impl Drop for Pids {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
            }
        }
    }
}

/// True while `pid` runs (not a zombie).
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    match stat {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// A project of `n` services that print `line 0`, `line 1`, ... every 20 ms
/// (or sleep quietly with `quiet`).
pub fn write_project(
    dir: &Path,
    name: &str,
    n: usize,
    quiet: bool,
) -> harness_protocol::ProjectRef {
    let mut yaml = format!("name: {name}\nservices:\n");
    let script = if quiet {
        "exec sleep 600"
    } else {
        "i=0; while true; do echo \"line $$i\"; i=$$((i+1)); sleep 0.02; done"
    };
    for i in 0..n {
        yaml.push_str(&format!(
            "  s{i}:\n    type: process\n    binary: sh\n    args: [-c, '{script}']\n"
        ));
    }
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("write project");
    harness_protocol::ProjectRef {
        files: vec![file],
        working_dir: Some(dir.to_owned()),
        ..harness_protocol::ProjectRef::default()
    }
}

/// Writes `yaml` as `services.yaml` in `dir`; the project reference to it.
pub fn project_file(dir: &Path, yaml: &str) -> harness_protocol::ProjectRef {
    let file = dir.join("services.yaml");
    std::fs::write(&file, yaml).expect("write project");
    harness_protocol::ProjectRef {
        files: vec![file],
        working_dir: Some(dir.to_owned()),
        ..harness_protocol::ProjectRef::default()
    }
}

/// The status of service `name` among the projects' statuses.
pub fn service_status(
    st: &[harness_protocol::ProjectStatus],
    name: &str,
) -> harness_core::ServiceStatus {
    st.iter()
        .flat_map(|p| p.services.iter())
        .find(|s| s.name.as_str() == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} in status: {st:?}"))
}

/// The pid of each service of `statuses` (each must have one).
pub fn pids(
    statuses: &[harness_core::ServiceStatus],
) -> std::collections::BTreeMap<harness_core::ServiceName, u32> {
    statuses
        .iter()
        .map(|s| (s.name.clone(), s.pid.expect("running service has a pid")))
        .collect()
}

/// `up --wait` of the whole `project` (30 s at most).
pub async fn up_wait(
    c: &harness_protocol::Client,
    project: &harness_protocol::ProjectRef,
) -> harness_protocol::ProjectStatus {
    c.up(harness_protocol::UpParams {
        project: project.clone(),
        wait: true,
        timeout_ms: Some(30_000),
        ..harness_protocol::UpParams::default()
    })
    .await
    .expect("up --wait")
}

/// `GET path` from an HTTP server (the metrics endpoint): the whole response.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// Brings `project` up through `c`; the returned guard kills its service processes.
pub async fn up_with_cleanup(
    c: &harness_protocol::Client,
    project: &harness_protocol::ProjectRef,
) -> Pids {
    c.up(harness_protocol::UpParams {
        project: project.clone(),
        ..harness_protocol::UpParams::default()
    })
    .await
    .unwrap();
    Pids(
        c.status(harness_protocol::ServicesParams::default())
            .await
            .unwrap()
            .iter()
            .flat_map(|p| p.services.iter().filter_map(|s| s.pid))
            .collect(),
    )
}
