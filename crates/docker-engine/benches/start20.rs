//! 20 containers from nothing to all running: through this client (one after
//! the other, and all at once) against the bare baseline of a `docker run -d`
//! loop, measured in the same run on the same engine.
//!
//! `cargo bench -p docker-engine --bench start20`

use std::process::Command;
use std::time::{Duration, Instant};

use docker_engine::testing::{BUSYBOX, engine_or_skip, unique_name};
use docker_engine::{ContainerSpec, Docker};

const N: usize = 20;
const ROUNDS: usize = 3;

fn remove_label(label: &str) {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=harness.bench={label}"),
        ])
        .output()
        .expect("docker ps");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    if !ids.is_empty() {
        let mut args = vec!["rm".to_owned(), "-f".into()];
        args.extend(ids);
        let _ = Command::new("docker").args(&args).output();
    }
}

/// Removes a round's containers when dropped, also if the round panics.
struct Remove(String);

impl Drop for Remove {
    fn drop(&mut self) {
        remove_label(&self.0);
    }
}

fn baseline(label: &str) -> Duration {
    let t = Instant::now();
    for i in 0..N {
        let st = Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                &format!("{label}-{i}"),
                "--label",
                &format!("harness.bench={label}"),
                BUSYBOX,
                "sleep",
                "600",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("docker run");
        assert!(st.success());
    }
    t.elapsed()
}

fn spec(label: &str, i: usize) -> ContainerSpec {
    let mut s = ContainerSpec::new(BUSYBOX);
    s.name = Some(format!("{label}-{i}"));
    s.cmd = Some(vec!["sleep".into(), "600".into()]);
    s.labels.insert("harness.bench".into(), label.into());
    s
}

async fn ours_sequential(docker: &Docker, label: &str) -> Duration {
    let t = Instant::now();
    for i in 0..N {
        let id = docker.create_container(&spec(label, i)).await.unwrap();
        docker.start_container(&id).await.unwrap();
    }
    t.elapsed()
}

async fn ours_concurrent(docker: &Docker, label: &str) -> Duration {
    let t = Instant::now();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let docker = docker.clone();
            let s = spec(label, i);
            smol::spawn(async move {
                let id = docker.create_container(&s).await.unwrap();
                docker.start_container(&id).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    t.elapsed()
}

async fn all_running(docker: &Docker, label: &str) {
    let list = docker
        .list_containers(&[("harness.bench", label)])
        .await
        .unwrap();
    assert_eq!(list.len(), N);
    assert!(list.iter().all(|c| c.state == "running"));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    smol::block_on(async {
        let Some(docker) = engine_or_skip("start20 benchmark").await else {
            return;
        };
        let (mut base, mut seq, mut conc) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            for (which, out) in [(0, &mut base), (1, &mut seq), (2, &mut conc)] {
                let label = unique_name("hde-bench");
                let guard = Remove(label.clone());
                let d = match which {
                    0 => {
                        blocking::unblock({
                            let l = label.clone();
                            move || baseline(&l)
                        })
                        .await
                    }
                    1 => ours_sequential(&docker, &label).await,
                    _ => ours_concurrent(&docker, &label).await,
                };
                all_running(&docker, &label).await;
                out.push(d);
                blocking::unblock(move || drop(guard)).await;
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let b = median(base);
        let s = median(seq);
        let c = median(conc);
        println!("{N} containers to running, median of {ROUNDS} rounds:");
        println!("  docker run -d loop (baseline): {:8.1} ms", ms(b));
        println!(
            "  docker-engine, sequential:     {:8.1} ms  ({:.2}x baseline)",
            ms(s),
            ms(s) / ms(b)
        );
        println!(
            "  docker-engine, concurrent:     {:8.1} ms  ({:.2}x baseline)",
            ms(c),
            ms(c) / ms(b)
        );
    })
}
