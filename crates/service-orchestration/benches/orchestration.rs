//! What the orchestrator costs beyond the work itself, each figure against a
//! bare baseline measured in the same run:
//!
//! - (a) 500 independent services to all running, vs a bare spawn loop;
//! - (b) 50 services in 10 layers of 5, each ready (an exec check sees a file)
//!   100 ms after it starts: time to all ready vs the ideal 10 x 100 ms and a
//!   plain loop, with checks every 10 ms throughout and with checks every
//!   10 ms until ready then every second (`start_interval`), and where each
//!   service's time goes (spawn, its own work, the check noticing);
//! - (c) a crash-looping service: CPU time of this process per restart, vs a
//!   bare spawn-and-reap loop.
//!
//! Run with `cargo bench -p service-orchestration --bench orchestration`.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness_config::{
    Backoff, Check, Condition, Dependency, Probe, Project, RestartMode, ServiceSpec, Settings,
};
use harness_core::{BoxTask, ProjectName, ServiceName, ServiceState, SharedSpawner};
use service_orchestration::{ManagerOptions, ServiceManager};

fn name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("bench names are valid")
}

fn project(services: Vec<ServiceSpec>) -> Arc<Project> {
    let map: BTreeMap<ServiceName, ServiceSpec> =
        services.into_iter().map(|s| (s.name.clone(), s)).collect();
    Arc::new(
        Project::new(
            ProjectName::new("bench").expect("valid"),
            Settings::default(),
            BTreeMap::new(),
            map,
        )
        .expect("the bench graphs are acyclic"),
    )
}

fn spawner() -> SharedSpawner {
    Arc::new(|t: BoxTask| smol::spawn(t).detach())
}

fn manager(p: Arc<Project>) -> ServiceManager {
    ServiceManager::new(p, ManagerOptions::new(spawner())).expect("default options are valid")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// CPU time (user + system) of this process so far, from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("linux /proc");
    let rest = stat.rsplit_once(')').expect("stat has a comm field").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, utime 14, stime 15 (1-based) -> indexes 11, 12.
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // CLK_TCK is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// (a) baseline: spawn `n` `sleep` processes in their own groups, as fast as possible.
fn bare_spawn(n: usize) -> Duration {
    let t = Instant::now();
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        let c = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sleep");
        children.push(c);
    }
    let took = t.elapsed();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    took
}

/// (a) the manager: `n` independent services to all running.
async fn managed_spawn(n: usize) -> Duration {
    let services = (0..n)
        .map(|i| {
            let mut s =
                ServiceSpec::process(name(&format!("s{i}")), "sleep", vec!["60".to_owned()]);
            s.restart.mode = RestartMode::No;
            s
        })
        .collect();
    let m = manager(project(services));
    let all: Vec<ServiceName> = m.project().services.keys().cloned().collect();
    let t = Instant::now();
    m.start(&all).expect("known names");
    m.wait_ready(&all, Duration::from_secs(120))
        .await
        .expect("all running");
    let took = t.elapsed();
    m.stop_all().await;
    took
}

/// State changes as they were seen: when, which service, which state.
type StateLog = Vec<(Instant, String, &'static str)>;

/// How often (b)'s readiness checks run: every `start_interval` until the
/// check first passes, every `period` after.
#[derive(Clone, Copy)]
struct Cadence {
    start_interval: Duration,
    period: Duration,
}

impl std::fmt::Display for Cadence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        if self.start_interval == self.period {
            write!(f, "checks every {:.0} ms throughout", ms(self.period))
        } else {
            write!(
                f,
                "checks every {:.0} ms until ready, then every {:.0} ms",
                ms(self.start_interval),
                ms(self.period)
            )
        }
    }
}

/// (b) 10 layers of 5; each service ready 100 ms after it starts.
async fn layered(dir: &Path, cadence: Cadence) -> Duration {
    let mut services = Vec::new();
    for layer in 0..10 {
        for i in 0..5 {
            let n = format!("l{layer}s{i}");
            let mut s = ServiceSpec::process(
                name(&n),
                "sh",
                vec![
                    "-c".to_owned(),
                    "sleep 0.1; : > ready-$HARNESS_SERVICE; exec sleep 60".to_owned(),
                ],
            );
            s.working_dir = Some(dir.to_path_buf());
            s.restart.mode = RestartMode::No;
            let mut p = Probe::new(Check::Exec {
                command: "test".to_owned(),
                args: vec!["-f".to_owned(), format!("ready-{n}")],
            });
            p.period = cadence.period;
            p.start_interval = Some(cadence.start_interval);
            p.failure_threshold = 1000;
            s.readiness = Some(p);
            if layer > 0 {
                for j in 0..5 {
                    s.dependencies.push(Dependency {
                        service: name(&format!("l{}s{j}", layer - 1)),
                        condition: Condition::Healthy,
                    });
                }
            }
            services.push(s);
        }
    }
    let m = manager(project(services));
    let top: Vec<ServiceName> = (0..5).map(|i| name(&format!("l9s{i}"))).collect();
    let log: Arc<std::sync::Mutex<StateLog>> = Arc::default();
    {
        let mut events = m.subscribe();
        let log = log.clone();
        smol::spawn(async move {
            while let Some(ev) = futures_lite::StreamExt::next(&mut events).await {
                if let service_orchestration::ManagerEvent::State { service, state } = ev {
                    let now = Instant::now();
                    log.lock()
                        .expect("bench lock")
                        .push((now, service.to_string(), state.label()));
                }
            }
        })
        .detach();
    }
    let (t, t_wall) = (Instant::now(), std::time::SystemTime::now());
    m.start(&top).expect("known names");
    let all: Vec<ServiceName> = m.project().services.keys().cloned().collect();
    m.wait_ready(&all, Duration::from_secs(60))
        .await
        .expect("all ready");
    let took = t.elapsed();
    {
        // Per layer: first start, last healthy (ms since the start request).
        let log = log.lock().expect("bench lock");
        let mut line = String::new();
        let mut bounds = Vec::new();
        for layer in 0..10 {
            let prefix = format!("l{layer}s");
            let ms = |label: &str, pick_last: bool| {
                let it = log
                    .iter()
                    .filter(|(_, s, l)| s.starts_with(&prefix) && *l == label)
                    .map(|(at, _, _)| at.duration_since(t).as_secs_f64() * 1e3);
                if pick_last {
                    it.fold(0.0, f64::max)
                } else {
                    it.fold(f64::MAX, f64::min)
                }
            };
            let (first, last) = (ms("starting", false), ms("healthy", true));
            bounds.push((first, last));
            line.push_str(&format!(" L{layer}:{first:.0}-{last:.0}"));
        }
        // Time from the last service of a layer becoming healthy to the first
        // service of the next layer starting: what gating on dependencies costs.
        let gating: f64 = bounds.windows(2).map(|w| (w[1].0 - w[0].1).max(0.0)).sum();
        println!(
            "    layers (ms from start: first starting - last healthy):{line}; gating {gating:.1} ms over 9 transitions"
        );
        // Per service, where its time goes: starting -> running (spawn),
        // running -> its ready file written (the shell, `sleep 0.1`), the file
        // -> healthy (the check noticing it). The file's mtime is on the wall
        // clock, placed on the monotonic one through the start instant.
        let at = |svc: &str, label: &str| {
            log.iter()
                .find(|(_, s, l)| s == svc && *l == label)
                .map(|(at, _, _)| at.duration_since(t).as_secs_f64() * 1e3)
        };
        let (mut spawn, mut work, mut detect) = (Vec::new(), Vec::new(), Vec::new());
        for layer in 0..10 {
            for i in 0..5 {
                let svc = format!("l{layer}s{i}");
                let file = std::fs::metadata(dir.join(format!("ready-{svc}")))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|w| w.duration_since(t_wall).ok())
                    .map(|d| d.as_secs_f64() * 1e3);
                if let (Some(s), Some(r), Some(f), Some(h)) = (
                    at(&svc, "starting"),
                    at(&svc, "running"),
                    file,
                    at(&svc, "healthy"),
                ) {
                    spawn.push(r - s);
                    work.push(f - r);
                    detect.push(h - f);
                }
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!(
            "    per service (mean of {}): spawn {:.1} ms, running -> ready file {:.1} ms, ready file -> healthy {:.1} ms (max {:.1})",
            spawn.len(),
            mean(&spawn),
            mean(&work),
            mean(&detect),
            detect.iter().copied().fold(0.0, f64::max)
        );
    }
    m.stop_all().await;
    for e in std::fs::read_dir(dir).expect("bench dir").flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    took
}

/// (b) baseline without the orchestrator: the same 10 layers of 5 processes,
/// each layer spawned once the previous one's files exist, checked every
/// `period` by running `test -f` (the same exec check), in a plain loop.
fn bare_layered(dir: &Path, period: Duration) -> Duration {
    let t = Instant::now();
    let mut children = Vec::new();
    for layer in 0..10 {
        let names: Vec<String> = (0..5).map(|i| format!("b{layer}s{i}")).collect();
        for n in &names {
            children.push(
                std::process::Command::new("sh")
                    .args(["-c", "sleep 0.1; : > ready-$SVC; exec sleep 60"])
                    .env("SVC", n)
                    .current_dir(dir)
                    .process_group(0)
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn sh"),
            );
        }
        let mut pending = names;
        while !pending.is_empty() {
            let started = Instant::now();
            pending.retain(|n| {
                !std::process::Command::new("test")
                    .args(["-f", &format!("ready-{n}")])
                    .current_dir(dir)
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if !pending.is_empty() {
                std::thread::sleep((started + period).saturating_duration_since(Instant::now()));
            }
        }
    }
    let took = t.elapsed();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    for e in std::fs::read_dir(dir).expect("bench dir").flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    took
}

/// (c) baseline: spawn and reap `/bin/false` `n` times; CPU of this process per run.
fn bare_crash_loop(n: u32) -> Duration {
    let before = cpu_time();
    for _ in 0..n {
        let _ = std::process::Command::new("false")
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .status();
    }
    (cpu_time() - before) / n
}

/// (c) the manager restarting a crashing service `n` times (1 ms backoff).
async fn managed_crash_loop(n: u32) -> (Duration, Duration) {
    let mut s = ServiceSpec::process(name("crashy"), "false", vec![]);
    s.restart.mode = RestartMode::Always;
    s.restart.max_restarts = Some(n);
    s.restart.backoff = Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(1),
        multiplier: 1.0,
        jitter: 0.0,
        reset_after: Duration::from_secs(3600),
    };
    let m = manager(project(vec![s]));
    let before = cpu_time();
    let t = Instant::now();
    m.start(&[name("crashy")]).expect("known name");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !matches!(m.state("crashy"), Some(ServiceState::Failed { .. })) {
        assert!(Instant::now() < deadline, "crash loop did not end");
        async_io::Timer::after(Duration::from_millis(5)).await;
    }
    let wall = t.elapsed();
    let cpu = cpu_time() - before;
    let restarts = m.status()[0].restarts.max(1);
    (cpu / restarts, wall / restarts)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it too: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { 3 };
    let n = if quick { 50 } else { 500 };
    // ORCH_BENCH=a,b,c selects parts (all by default).
    let only = std::env::var("ORCH_BENCH").unwrap_or_else(|_| "a,b,c".into());
    smol::block_on(async {
        if only.contains('a') {
            let mut bare = Vec::new();
            let mut managed = Vec::new();
            for _ in 0..rounds {
                bare.push(bare_spawn(n).as_secs_f64() * 1e3);
                managed.push(managed_spawn(n).await.as_secs_f64() * 1e3);
            }
            let (b, m) = (median(bare), median(managed));
            println!(
                "(a) {n} independent services to running: manager {m:.1} ms, bare spawn loop {b:.1} ms, ratio {:.2}x",
                m / b
            );
        }

        if only.contains('b') {
            let dir = tempfile::tempdir().expect("temp dir");
            // ORCH_PERIOD_MS: how often checks run until a service is ready (10 by default).
            let start_interval = Duration::from_millis(
                std::env::var("ORCH_PERIOD_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10),
            );
            // Checking at one period throughout, and at a start interval until
            // ready then every second (what a service would configure).
            let cadences = [
                Cadence {
                    start_interval,
                    period: start_interval,
                },
                Cadence {
                    start_interval,
                    period: Duration::from_secs(1),
                },
            ];
            let mut times = vec![Vec::new(); cadences.len()];
            let mut bare = Vec::new();
            for _ in 0..rounds {
                bare.push(bare_layered(dir.path(), start_interval).as_secs_f64() * 1e3);
                for (c, t) in cadences.iter().zip(&mut times) {
                    t.push(layered(dir.path(), *c).await.as_secs_f64() * 1e3);
                }
            }
            let b = median(bare);
            println!(
                "(b) 10 layers x 5, ready 100 ms after start: ideal 1000 ms, bare loop {b:.0} ms (checks every {} ms until each layer is ready)",
                start_interval.as_millis()
            );
            for (c, t) in cadences.iter().zip(times) {
                let t = median(t);
                println!(
                    "    manager, {c}: {t:.0} ms to all ready; ratio to ideal {:.2}x, to bare {:.2}x",
                    t / 1000.0,
                    t / b
                );
            }
        }

        if only.contains('c') {
            let restarts = if quick { 20 } else { 300 };
            let bare = bare_crash_loop(restarts);
            let (cpu, wall) = managed_crash_loop(restarts).await;
            println!(
                "(c) crash loop, {restarts} restarts: manager CPU {:.2} ms/restart (wall {:.2} ms/restart), bare spawn+reap CPU {:.2} ms/run",
                cpu.as_secs_f64() * 1e3,
                wall.as_secs_f64() * 1e3,
                bare.as_secs_f64() * 1e3
            );
        }
    });
}
