//! Wall time of `harness status --json` with 100 services running, next to a bare
//! fork/exec of `true` measured in the same run (the floor of any CLI call).
//!
//! `cargo bench -p harness-cli --bench status` (target: under 20 ms per call).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{Env, sh_service};

const SERVICES: usize = 100;
const RUNS: usize = 100;

struct Stats {
    min: Duration,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        min: v[0],
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        mean: v.iter().sum::<Duration>() / v.len() as u32,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn report(name: &str, s: &Stats, baseline: Option<&Stats>) {
    let ratio = baseline
        .map(|b| {
            format!(
                "  ({:.1}x the baseline p50)",
                s.p50.as_secs_f64() / b.p50.as_secs_f64()
            )
        })
        .unwrap_or_default();
    println!(
        "{name:<40} min {:>9}  p50 {:>9}  p90 {:>9}  p99 {:>9}  mean {:>9}{ratio}",
        ms(s.min),
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.mean)
    );
}

fn time(runs: usize, mut f: impl FnMut()) -> Stats {
    f(); // warm up
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f();
        v.push(t.elapsed());
    }
    stats(v)
}

fn main() {
    // `cargo bench` passes `--bench`; this binary takes no options.
    support::ensure_workspace_binaries_for(Some("bench"));
    let env = Env::with_daemon();
    let mut y = String::from("name: bench\nservices:\n");
    for i in 0..SERVICES {
        y += &sh_service(&format!("svc{i:03}"), "exec sleep 600", "");
    }
    env.write("services.yaml", &y);
    env.run(&["up", "-d", "--wait", "--timeout", "300s"]).ok();
    let rows = env.status();
    assert_eq!(rows.len(), SERVICES);

    println!("harness status --json, {SERVICES} services running, {RUNS} runs each");
    let baseline = time(RUNS, || {
        let s = std::process::Command::new("true").status().unwrap();
        assert!(s.success());
    });
    report("baseline: fork/exec `true`", &baseline, None);

    let status = time(RUNS, || {
        let out = env.cmd(&["status", "--json"]).output().unwrap();
        assert!(out.status.success());
        assert!(out.stdout.len() > SERVICES * 50);
    });
    report(
        "harness status --json (loads the file)",
        &status,
        Some(&baseline),
    );

    let named = time(RUNS, || {
        let out = env
            .cmd(&["-p", "bench", "status", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success());
    });
    report("harness -p bench status --json", &named, Some(&baseline));

    let table = time(RUNS, || {
        let out = env.cmd(&["status"]).output().unwrap();
        assert!(out.status.success());
    });
    report("harness status (table)", &table, Some(&baseline));

    let target = Duration::from_millis(20);
    println!(
        "target p50 < {}: {}",
        ms(target),
        if status.p50 < target {
            "met"
        } else {
            "NOT met"
        }
    );
    env.run(&["down"]).ok();
}
