//! Launcher overhead against bare baselines measured in the same run.
//!
//! - spawn: 500 `sleep 5` through `LocalLauncher` until every `Started` event
//!   is read, vs a bare `std::process::Command` spawn loop;
//! - lines: `seq 1000000` read line by line through the event stream, vs the
//!   same producer piped into `cat > /dev/null`.
//!
//! Run with `cargo bench -p command-executor`; name parts to run only those,
//! e.g. `cargo bench -p command-executor --bench executor -- spawn`
//! (parts: `spawn`, `interleaved`, `lines`).

use std::time::{Duration, Instant};

use command_executor::{Command, LaunchOptions, LocalLauncher, ProcessEvent};
use futures_lite::StreamExt;

const SPAWNS: usize = 500;
const LINES: u64 = 1_000_000;
const ROUNDS: usize = 7;

/// CPU time of this process's threads so far (the spawning thread and any
/// thread of the launcher), in nanoseconds from `/proc/self/task/*/schedstat`.
fn cpu_time() -> Duration {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bare_spawn() -> (Duration, Duration) {
    let cpu = cpu_time();
    let start = Instant::now();
    let mut children = Vec::with_capacity(SPAWNS);
    for _ in 0..SPAWNS {
        children.push(
            std::process::Command::new("sleep")
                .arg("5")
                .spawn()
                .expect("spawn sleep"),
        );
    }
    let took = (start.elapsed(), cpu_time() - cpu);
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    took
}

fn launcher_spawn() -> (Duration, Duration) {
    futures_lite::future::block_on(async {
        let launcher = LocalLauncher::new();
        let cmd = Command::new("sleep").arg("5");
        let cpu = cpu_time();
        let start = Instant::now();
        let mut running = Vec::with_capacity(SPAWNS);
        for _ in 0..SPAWNS {
            running.push(
                launcher
                    .spawn(&cmd, LaunchOptions::default())
                    .expect("launch sleep"),
            );
        }
        for (_, events) in &mut running {
            match events.next().await {
                Some(ProcessEvent::Started { .. }) => {}
                other => panic!("expected Started, got {other:?}"),
            }
        }
        let took = (start.elapsed(), cpu_time() - cpu);
        for (h, _) in &running {
            h.kill().await.expect("kill");
        }
        took
    })
}

/// Both kinds of spawn in alternating batches of 25, so that both meet the
/// same background load: total time of each over 500 spawns.
fn interleaved_spawn() -> (Duration, Duration) {
    const BATCH: usize = 25;
    futures_lite::future::block_on(async {
        let launcher = LocalLauncher::new();
        let cmd = Command::new("sleep").arg("5");
        let (mut bare, mut ours) = (Duration::ZERO, Duration::ZERO);
        let mut children = Vec::with_capacity(SPAWNS);
        let mut running = Vec::with_capacity(SPAWNS);
        for _ in 0..SPAWNS / BATCH {
            let start = Instant::now();
            for _ in 0..BATCH {
                children.push(
                    std::process::Command::new("sleep")
                        .arg("5")
                        .spawn()
                        .expect("spawn sleep"),
                );
            }
            bare += start.elapsed();
            let start = Instant::now();
            let first = running.len();
            for _ in 0..BATCH {
                running.push(
                    launcher
                        .spawn(&cmd, LaunchOptions::default())
                        .expect("launch sleep"),
                );
            }
            for (_, events) in &mut running[first..] {
                match events.next().await {
                    Some(ProcessEvent::Started { .. }) => {}
                    other => panic!("expected Started, got {other:?}"),
                }
            }
            ours += start.elapsed();
        }
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (h, _) in &running {
            h.kill().await.expect("kill");
        }
        (bare, ours)
    })
}

fn bare_lines() -> Duration {
    let start = Instant::now();
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("seq {LINES} | cat > /dev/null"))
        .status()
        .expect("sh");
    assert!(st.success());
    start.elapsed()
}

fn launcher_lines() -> (Duration, u64) {
    futures_lite::future::block_on(async {
        let cmd = Command::new("seq").arg(LINES.to_string());
        let start = Instant::now();
        let (_h, mut events) = LocalLauncher::new()
            .spawn(&cmd, LaunchOptions::default())
            .expect("launch seq");
        let mut lines = 0u64;
        let mut dropped = 0u64;
        while let Some(ev) = events.next().await {
            match ev {
                ProcessEvent::Output(_) => lines += 1,
                ProcessEvent::Dropped { lines } => dropped += lines,
                _ => {}
            }
        }
        let took = start.elapsed();
        assert_eq!(lines + dropped, LINES);
        (took, dropped)
    })
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: stay quick there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("executor bench: run with `cargo bench` to measure");
        return;
    }
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |part: &str| parts.is_empty() || parts.iter().any(|p| part.contains(p.as_str()));
    if run("spawn") {
        spawn_part();
    }
    if run("interleaved") {
        interleaved_part();
    }
    if run("lines") {
        lines_part();
    }
}

fn spawn_part() {
    let (mut bare_s, mut ours_s, mut bare_c, mut ours_c) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (w, c) = bare_spawn();
        bare_s.push(w);
        bare_c.push(c);
        let (w, c) = launcher_spawn();
        ours_s.push(w);
        ours_c.push(c);
    }
    let (bmin, omin) = (
        *bare_s.iter().min().expect("rounds ran"),
        *ours_s.iter().min().expect("rounds ran"),
    );
    let (b, o) = (median(bare_s), median(ours_s));
    let (bc, oc) = (median(bare_c), median(ours_c));
    println!(
        "spawn {SPAWNS} sleep: bare {:.1} ms ({:.0} us each, cpu {:.0} us each), LocalLauncher until Started {:.1} ms \
         ({:.0} us each, cpu {:.0} us each), wall ratio {:.2}x (medians of {ROUNDS}); best rounds {:.1} ms vs {:.1} ms, \
         ratio {:.2}x",
        b.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e6 / SPAWNS as f64,
        bc.as_secs_f64() * 1e6 / SPAWNS as f64,
        o.as_secs_f64() * 1e3,
        o.as_secs_f64() * 1e6 / SPAWNS as f64,
        oc.as_secs_f64() * 1e6 / SPAWNS as f64,
        o.as_secs_f64() / b.as_secs_f64(),
        bmin.as_secs_f64() * 1e3,
        omin.as_secs_f64() * 1e3,
        omin.as_secs_f64() / bmin.as_secs_f64()
    );
}

fn interleaved_part() {
    let (mut ib, mut io) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (b, o) = interleaved_spawn();
        ib.push(b);
        io.push(o);
    }
    let (b, o) = (median(ib), median(io));
    println!(
        "spawn {SPAWNS} sleep, interleaved in batches of 25: bare {:.1} ms, LocalLauncher {:.1} ms, ratio {:.2}x \
         (medians of {ROUNDS})",
        b.as_secs_f64() * 1e3,
        o.as_secs_f64() * 1e3,
        o.as_secs_f64() / b.as_secs_f64()
    );
}

fn lines_part() {
    let (mut bare_l, mut ours_l) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        bare_l.push(bare_lines());
        ours_l.push(launcher_lines());
    }
    let b = median(bare_l);
    ours_l.sort();
    let (o, dropped) = ours_l[ours_l.len() / 2];
    let delivered = LINES - dropped;
    println!(
        "{LINES} lines: bare `seq | cat > /dev/null` {:.1} ms ({:.2} M lines/s); event stream {:.1} ms: \
         {:.2} M lines/s read and split, {delivered} delivered ({:.2} M lines/s), {dropped} dropped \
         because the reader could not keep up with `seq`",
        b.as_secs_f64() * 1e3,
        LINES as f64 / b.as_secs_f64() / 1e6,
        o.as_secs_f64() * 1e3,
        LINES as f64 / o.as_secs_f64() / 1e6,
        delivered as f64 / o.as_secs_f64() / 1e6,
    );
}
