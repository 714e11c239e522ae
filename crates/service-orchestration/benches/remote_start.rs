//! Remote start latency: a command and a remote service start over the
//! multiplexed master connection vs a fresh ssh connection per command, with
//! a bare local fork/exec measured in the same run as the baseline.
//!
//! Needs Docker and the `harness-test/sshd` image (one node is started and
//! removed); prints why and exits when they are missing.

#[path = "../tests/remote_support/mod.rs"]
mod remote_support;

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use harness_core::Signal;
use remote_support::*;
use service_orchestration::ServiceExecutor;
use service_orchestration::remote::RemoteExecutor;
use service_orchestration::ssh::SshOptions;

const ROUNDS: usize = 20;

struct Stats {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Stats {
    fn print(&mut self) {
        self.samples.sort();
        let n = self.samples.len();
        let mean = self.samples.iter().sum::<Duration>() / n as u32;
        let p = |q: f64| self.samples[((n as f64 - 1.0) * q).round() as usize];
        println!(
            "{:<44} n={n:<3} median {:>9.2?}  p90 {:>9.2?}  mean {:>9.2?}",
            self.name,
            p(0.5),
            p(0.9),
            mean
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once with no
    // arguments: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(1);
    smol::block_on(async {
        let mux = nodes.hosts(nodes.options());
        nodes.wait_ready(&mux).await;
        let fresh = nodes.hosts(SshOptions {
            multiplex: false,
            ..nodes.options()
        });
        let project = project_name();
        let ctx = ctx(&project, smol_spawner());

        let mut bare = Stats {
            name: "bare: local fork/exec `sh -c true`",
            samples: Vec::new(),
        };
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let st = std::process::Command::new("sh")
                .args(["-c", "true"])
                .status()
                .unwrap();
            bare.samples.push(t.elapsed());
            assert!(st.success());
        }

        let mut cmds = Vec::new();
        for (name, hosts) in [
            ("command, fresh ssh connection each", &fresh),
            ("command, multiplexed master", &mux),
        ] {
            let h = hosts.get("n1").unwrap();
            h.run("true", None, Duration::from_secs(30)).await.unwrap();
            let mut s = Stats {
                name,
                samples: Vec::new(),
            };
            for _ in 0..ROUNDS {
                let t = Instant::now();
                h.run("true", None, Duration::from_secs(30)).await.unwrap();
                s.samples.push(t.elapsed());
            }
            cmds.push(s);
        }

        let mut starts = Vec::new();
        for (name, hosts) in [
            ("remote service start, fresh ssh each", &fresh),
            ("remote service start, multiplexed master", &mux),
        ] {
            let exec = RemoteExecutor::new(hosts.clone());
            let mut s = Stats {
                name,
                samples: Vec::new(),
            };
            for i in 0..ROUNDS {
                let spec = remote_sh(&format!("s{i}"), "n1", "while true; do sleep 1; done");
                let t = Instant::now();
                let mut l = exec.start(&spec, &ctx).await.unwrap();
                s.samples.push(t.elapsed());
                l.instance.stop(Signal::KILL, Duration::ZERO).await.unwrap();
                while l.events.next().await.is_some() {}
            }
            starts.push(s);
        }
        println!("remote start latency (one sshd node in a local container)");
        bare.print();
        for s in cmds.iter_mut().chain(starts.iter_mut()) {
            s.print();
        }
        mux.close_all().await;
    });
}
