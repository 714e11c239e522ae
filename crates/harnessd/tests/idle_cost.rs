//! What an idle daemon holds for the services it follows: a bounded number
//! of threads whatever the number of services, and at most one file
//! descriptor per service plus a constant (counts from /proc, not timings).

mod support;

use std::time::{Duration, Instant};

use harness_protocol::{Client, ServicesParams, UpParams};
use support::*;

const SERVICES: usize = 500;
/// Threads an idle daemon may keep, whatever it follows.
const MAX_THREADS: usize = 16;
/// Descriptors beyond one per service: listeners, the pump's epoll, eventfd
/// and inotify, the lock, the log.
const FD_CONSTANT: usize = 64;

fn count(dir: String) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn five_hundred_idle_services_cost_bounded_threads_and_one_fd_each() {
    let d = TestDaemon::start();
    let project = write_project(d.dir.path(), "idle", SERVICES, true);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = c
            .up(UpParams {
                project: project.clone(),
                wait: true,
                timeout_ms: Some(120_000),
                ..UpParams::default()
            })
            .await
            .unwrap();
        let _guard = Pids(st.services.iter().filter_map(|s| s.pid).collect());
        assert_eq!(st.services.len(), SERVICES);
        // The start's burst is over once the blocking pool has shrunk back:
        // it lets surplus threads go after half a second without work.
        let pid = d.pid();
        let until = Instant::now() + DEADLINE;
        let threads = loop {
            let n = count(format!("/proc/{pid}/task"));
            if n <= MAX_THREADS || Instant::now() > until {
                break n;
            }
            async_io::Timer::after(Duration::from_millis(200)).await;
        };
        assert!(
            threads <= MAX_THREADS,
            "{threads} threads for {SERVICES} idle services"
        );
        let fds = count(format!("/proc/{pid}/fd"));
        assert!(
            fds <= SERVICES + FD_CONSTANT,
            "{fds} descriptors for {SERVICES} idle services"
        );
        eprintln!("{SERVICES} idle services: {threads} threads, {fds} descriptors");
        c.down(ServicesParams {
            project,
            ..ServicesParams::default()
        })
        .await
        .unwrap();
    });
}
