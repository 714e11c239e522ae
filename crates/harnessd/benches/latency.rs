//! Request latency of harnessd over one connection, against bare baselines
//! measured in the same run:
//!
//! - `tcp echo`: a 64-byte request/response over plain loopback TCP to a
//!   thread that echoes it (the floor for any loopback round trip);
//! - `ping`: the protocol's no-op request over mutual TLS + WebSocket;
//! - `status (100 services)`: the status of a project with 100 running services.
//!
//! Requests are sent open-loop at a fixed rate (1,000/s) and each latency
//! is measured from its scheduled send time, so queueing shows.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness_protocol::{Client, Method, ServicesParams, StateDir, UpParams};

const RATE_PER_SEC: u64 = 1_000;
const SECONDS: u64 = 5;

struct Report {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Report {
    fn print(&mut self) {
        self.samples.sort();
        let n = self.samples.len();
        let q = |p: f64| self.samples[((n as f64 * p) as usize).min(n - 1)];
        println!(
            "{:<24} n={:>5}  p50={:>8.1?}  p99={:>8.1?}  max={:>8.1?}",
            self.name,
            n,
            q(0.50),
            q(0.99),
            self.samples[n - 1]
        );
    }
}

/// Sends `RATE_PER_SEC` requests per second for `SECONDS`, open loop.
fn paced<F, Fut>(name: &'static str, make: F) -> Report
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let total = RATE_PER_SEC * SECONDS;
    let interval = Duration::from_nanos(1_000_000_000 / RATE_PER_SEC);
    let samples = smol::block_on(async {
        let start = Instant::now() + Duration::from_millis(50);
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let at = start + interval * i as u32;
            async_io::Timer::at(at).await;
            let fut = make();
            tasks.push(smol::spawn(async move {
                fut.await;
                at.elapsed()
            }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await);
        }
        out
    });
    Report { name, samples }
}

fn tcp_echo_baseline() -> Report {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let interval = Duration::from_nanos(1_000_000_000 / RATE_PER_SEC);
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut buf = [7u8; 64];
    for i in 0..RATE_PER_SEC * SECONDS {
        let at = start + interval * i as u32;
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        s.write_all(&buf).unwrap();
        s.read_exact(&mut buf).unwrap();
        samples.push(at.elapsed());
    }
    Report {
        name: "tcp echo (baseline)",
        samples,
    }
}

struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    state: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(c) = smol::block_on(Client::connect(&self.state)) {
            let _ = smol::block_on(c.down(ServicesParams::default()));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let child = Command::new(env!("CARGO_BIN_EXE_harnessd"))
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while !StateDir::new(&state)
        .read_address()
        .is_ok_and(|a| a.pid == child.id())
    {
        assert!(Instant::now() < until, "harnessd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Daemon {
        child,
        _dir: dir,
        state,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let d = start_daemon();
    let mut baseline = tcp_echo_baseline();
    baseline.print();

    let client = Arc::new(smol::block_on(Client::connect(&d.state)).unwrap());
    let c = client.clone();
    paced("ping", move || {
        let c = c.clone();
        async move {
            c.call(Method::Ping).await.unwrap();
        }
    })
    .print();

    let mut yaml = String::from("name: bench\nservices:\n");
    for i in 0..100 {
        yaml.push_str(&format!(
            "  s{i}:\n    type: process\n    binary: sleep\n    args: ['600']\n"
        ));
    }
    let file = d._dir.path().join("bench.yaml");
    std::fs::write(&file, yaml).unwrap();
    smol::block_on(client.up(UpParams {
        project: harness_protocol::ProjectRef {
            files: vec![file],
            ..Default::default()
        },
        wait: true,
        timeout_ms: Some(60_000),
        ..UpParams::default()
    }))
    .unwrap();
    let c = client.clone();
    paced("status (100 services)", move || {
        let c = c.clone();
        async move {
            let st = c.status(ServicesParams::default()).await.unwrap();
            assert_eq!(st[0].services.len(), 100);
        }
    })
    .print();
}
