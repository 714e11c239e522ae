//! `demo-api`: the HTTP API of the demo stack.
//!
//! Serves `GET /health` (200 once the schema is current), `GET /items`, and `POST /jobs`
//! (the worker calls it; each call is one processed job). Listens on `$PORT` (default 7878).

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use harness_demo::{SCHEMA_VERSION, data_dir, env_or, read_request, respond};

static JOBS: AtomicU64 = AtomicU64::new(0);

fn main() {
    let port = env_or("PORT", "7878");
    let listener = match TcpListener::bind(format!("127.0.0.1:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let dir = data_dir();
    let schema: u32 = std::fs::read_to_string(dir.join("schema_version"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let items: Vec<String> = std::fs::read_to_string(dir.join("items"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    if schema == SCHEMA_VERSION {
        println!(
            "api listening on http://127.0.0.1:{port} ({} items, schema v{schema})",
            items.len()
        );
    } else {
        eprintln!(
            "schema is at v{schema}, expected v{SCHEMA_VERSION}: run the migration first (health stays 503)"
        );
    }
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let started = Instant::now();
        let Ok(req) = read_request(&stream) else {
            continue;
        };
        let (status, body) = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/health") if schema == SCHEMA_VERSION => {
                (200, "{\"status\":\"ok\"}".to_string())
            }
            ("GET", "/health") => (503, "{\"status\":\"schema outdated\"}".to_string()),
            ("GET", "/items") => {
                let list: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
                (200, format!("[{}]", list.join(",")))
            }
            ("POST", "/jobs") => {
                let n = JOBS.fetch_add(1, Ordering::Relaxed) + 1;
                let item = items
                    .get(n as usize % items.len().max(1))
                    .cloned()
                    .unwrap_or_default();
                (201, format!("{{\"job\":{n},\"item\":\"{item}\"}}"))
            }
            _ => (404, "{\"error\":\"not found\"}".to_string()),
        };
        let _ = respond(&stream, status, &body);
        // Health checks are frequent: keep them out of the log.
        if req.path != "/health" {
            println!(
                "{} {} -> {status} in {:.1} ms",
                req.method,
                req.path,
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}
