//! `demo-worker`: calls the demo API periodically.
//!
//! Every `$INTERVAL_MS` (default 1000) it posts a job to `$API_URL` (`host:port`) and reports
//! the result; failures go to stderr and it keeps trying.

use std::time::{Duration, Instant};

use harness_demo::{call, env_or};

fn main() {
    let api = env_or("API_ADDR", "127.0.0.1:7878");
    let interval = Duration::from_millis(env_or("INTERVAL_MS", "1000").parse().unwrap_or(1000));
    println!(
        "worker started: posting a job to {api} every {} ms",
        interval.as_millis()
    );
    loop {
        let started = Instant::now();
        match call(&api, "POST", "/jobs", "") {
            Ok((201, body)) => println!(
                "done {body} in {:.1} ms",
                started.elapsed().as_secs_f64() * 1000.0
            ),
            Ok((status, body)) => eprintln!("api answered {status}: {body}"),
            Err(e) => eprintln!("api unreachable: {e}"),
        }
        std::thread::sleep(interval);
    }
}
