//! Parse + validate a generated 1,000-service file, next to bare baselines on the
//! same content: `serde_json` to an untyped value, and serde-saphyr to an untyped value.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::fmt::Write;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use harness_config::{LoadOptions, from_sources};

/// A project of `n` services: processes and containers with health checks, env,
/// ports and dependencies on earlier services.
fn generate(n: usize) -> String {
    let mut y = String::from("version: \"1.0\"\nname: bench\nservices:\n");
    for i in 0..n {
        let _ = writeln!(y, "  svc-{i}:");
        if i % 2 == 0 {
            let _ = writeln!(y, "    type: process\n    binary: /usr/bin/app-{i}");
            let _ = writeln!(
                y,
                "    args: [\"--port\", \"{}\", \"--name\", \"svc-{i}\"]",
                20000 + i
            );
            let _ = writeln!(y, "    ports: [{}]", 20000 + i);
        } else {
            let _ = writeln!(y, "    type: docker\n    image: registry.local/app:{i}");
            let _ = writeln!(y, "    ports: [\"{}:80\"]", 30000 + i);
            let _ = writeln!(y, "    security: {{read_only: true, cap_drop: [ALL]}}");
        }
        let _ = writeln!(
            y,
            "    env:\n      INDEX: \"{i}\"\n      LOG: ${{LOG_LEVEL:-info}}"
        );
        if i > 0 {
            let _ = writeln!(
                y,
                "      UPSTREAM: http://${{svc-{}.host}}:${{svc-{}.port}}",
                i - 1,
                i - 1
            );
        }
        let _ = writeln!(
            y,
            "    health_check:\n      tcp: {}\n      interval: 2s\n      retries: 5",
            if i % 2 == 0 { 20000 + i } else { 80 }
        );
        if i > 0 {
            let _ = writeln!(y, "    dependencies: [svc-{}]", i - 1);
        }
        if i > 2 && i % 3 == 0 {
            let _ = writeln!(
                y,
                "    restart: {{mode: always, backoff: {{initial: 1s, max: 30s}}}}"
            );
        }
    }
    y
}

fn bench(c: &mut Criterion) {
    let yaml = generate(1000);
    let json = serde_json::to_string(&serde_saphyr::from_str::<serde_json::Value>(&yaml).unwrap())
        .unwrap();
    let opts = LoadOptions::default().with_env([("LOG_LEVEL", "debug")]);
    // The generated file is valid.
    let loaded = from_sources(&[("bench.yaml", &yaml)], &opts).unwrap();
    assert_eq!(loaded.project.services.len(), 1000);

    let mut g = c.benchmark_group("1000 services");
    g.sample_size(20);
    g.bench_function(
        "baseline: serde_json to Value (same content as JSON)",
        |b| {
            b.iter(|| {
                black_box(serde_json::from_str::<serde_json::Value>(black_box(&json)).unwrap())
            })
        },
    );
    g.bench_function("baseline: serde-saphyr to untyped Value", |b| {
        b.iter(|| black_box(serde_saphyr::from_str::<serde_json::Value>(black_box(&yaml)).unwrap()))
    });
    g.bench_function(
        "harness-config: parse + interpolate + validate + graph",
        |b| b.iter(|| black_box(from_sources(&[("bench.yaml", black_box(&yaml))], &opts).unwrap())),
    );
    g.finish();

    // Wall time above suffers when other work shares the machine; CPU time of this
    // thread does much less. Print both for the three, measured the same way.
    println!("\nCPU time per iteration (this thread, from /proc/thread-self/schedstat):");
    let per_iter = |f: &dyn Fn()| -> Option<f64> {
        for _ in 0..3 {
            f();
        }
        let start = thread_cpu_ns()?;
        let n = 20;
        for _ in 0..n {
            f();
        }
        Some((thread_cpu_ns()? - start) as f64 / n as f64 / 1e6)
    };
    let rows: [(&str, &dyn Fn()); 4] = [
        ("baseline: serde_json to Value", &|| {
            black_box(serde_json::from_str::<serde_json::Value>(&json).unwrap());
        }),
        ("baseline: serde-saphyr to untyped Value", &|| {
            black_box(serde_saphyr::from_str::<serde_json::Value>(&yaml).unwrap());
        }),
        ("harness-config: located tree only", &|| {
            black_box(harness_config::tree::parse(&yaml, 0).unwrap());
        }),
        ("harness-config: load 1000 services", &|| {
            black_box(from_sources(&[("bench.yaml", &yaml)], &opts).unwrap());
        }),
    ];
    for (name, f) in rows {
        match per_iter(f) {
            Some(ms) => println!("  {name:<42} {ms:>8.2} ms"),
            None => println!("  {name:<42} (no schedstat on this system)"),
        }
    }
    println!(
        "  input: {} bytes of YAML, {} bytes of JSON",
        yaml.len(),
        json.len()
    );
}

/// Nanoseconds this thread has run on a CPU.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

criterion_group!(benches, bench);
criterion_main!(benches);
