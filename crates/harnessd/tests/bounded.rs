//! The daemon's memory stays bounded whatever clients ask and however large
//! the logs grow. Real daemon, real processes, real files.

mod support;

use std::io::Write;
use std::time::Instant;

use futures_lite::StreamExt;
use harness_core::ServiceName;
use harness_protocol::{Client, LogsParams, ServicesParams, StreamItem};
use support::*;

/// The daemon's peak resident memory so far (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc status")
        * 1024
}

async fn logs(c: &Client, params: LogsParams) -> Vec<String> {
    let mut s = c.logs(params).unwrap();
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        if let StreamItem::Log(l) = item.unwrap() {
            out.push(l.line);
        }
    }
    out
}

const MIB: u64 = 1 << 20;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[test]
fn tail_of_a_large_log_reads_only_its_end() {
    let d = TestDaemon::start();
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let project = write_project(d.dir.path(), "big", 1, true);
        let _pids = up_with_cleanup(&c, &project).await;
        // 40 MB of output, as if the service had written it.
        let log = d.state.join("logs/big/s0/stdout.log");
        let lines = 1_000_000;
        {
            let mut f = std::io::BufWriter::new(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            );
            for i in 0..lines {
                writeln!(f, "line {i:07} {}", "x".repeat(27)).unwrap();
            }
        }
        assert!(std::fs::metadata(&log).unwrap().len() >= 40_000_000);
        let s0 = ServiceName::new("s0").unwrap();
        let params = |tail, since_ms| LogsParams {
            project: project.clone(),
            services: vec![s0.clone()],
            tail,
            since_ms,
            ..LogsParams::default()
        };
        // Let the daemon stamp the file, as it would a growing log.
        let stamps = d.state.join("logs/big/s0/stdout.ts");
        let until = Instant::now() + DEADLINE;
        while std::fs::read_to_string(&stamps)
            .unwrap_or_default()
            .is_empty()
        {
            assert!(
                Instant::now() < until,
                "no checkpoint in {}",
                stamps.display()
            );
            async_io::Timer::after(std::time::Duration::from_millis(50)).await;
        }
        let before = peak_rss(d.pid());
        let started = Instant::now();
        let got = logs(&c, params(Some(10), None)).await;
        let took = started.elapsed();
        let grown = peak_rss(d.pid()).saturating_sub(before);
        eprintln!(
            "logs -n 10 of 40 MB: {took:?}, peak RSS grew by {} KiB",
            grown / 1024
        );
        let want: Vec<String> = (lines - 10..lines)
            .map(|i| format!("line {i:07} {}", "x".repeat(27)))
            .collect();
        assert_eq!(got, want);
        assert!(grown < 64 * MIB, "peak RSS grew by {} MiB", grown / MIB);

        // `--since` after every checkpoint finds nothing, without reading the file.
        let later = now_ms() + 60_000;
        let before = peak_rss(d.pid());
        assert!(logs(&c, params(None, Some(later))).await.is_empty());
        let grown = peak_rss(d.pid()).saturating_sub(before);
        assert!(grown < 64 * MIB, "peak RSS grew by {} MiB", grown / MIB);
        // Lines written after a moment are exactly those `--since` that moment returns.
        async_io::Timer::after(std::time::Duration::from_millis(300)).await;
        let mark = now_ms();
        async_io::Timer::after(std::time::Duration::from_millis(300)).await;
        {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            writeln!(f, "after the mark").unwrap();
        }
        let until = Instant::now() + DEADLINE;
        loop {
            let got = logs(&c, params(None, Some(mark))).await;
            if got == ["after the mark"] {
                break;
            }
            assert!(got.len() <= 1, "{} lines since the mark", got.len());
            assert!(Instant::now() < until, "{got:?}");
            async_io::Timer::after(std::time::Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn clients_that_stop_reading_are_closed_and_cost_bounded_memory() {
    use async_tungstenite::tungstenite::Message;
    use harness_protocol::{ClientMessage, Method, Request};

    let d = TestDaemon::start_with(&["--metrics", "127.0.0.1:0"]);
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let project = project_file(
            d.dir.path(),
            "name: chatty\nservices:\n  talk:\n    type: process\n    binary: sh\n    \
             args: [-c, 'while :; do seq 1 5000; sleep 0.01; done']\n",
        );
        let _pids = up_with_cleanup(&c, &project).await;
        // Enough history to fill every buffer between the daemon and a client at once.
        {
            let log = d.state.join("logs/chatty/talk/stdout.log");
            let mut f = std::io::BufWriter::new(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            );
            for i in 0..600_000 {
                writeln!(f, "history {i:07} {}", "y".repeat(32)).unwrap();
            }
        }
        let before = peak_rss(d.pid());

        // Clients that ask for `logs -f` and never read a byte of the answer.
        let stalled = 8;
        let mut silent = Vec::new();
        for id in 0..stalled {
            let mut ws = handshaken(&d).await;
            let request = ClientMessage::Request(Request {
                id,
                method: Method::Logs(LogsParams {
                    project: project.clone(),
                    follow: true,
                    ..LogsParams::default()
                }),
            });
            ws.send(Message::text(harness_protocol::encode(&request)))
                .await
                .unwrap();
            silent.push(ws);
        }

        // Meanwhile a client that reads is answered, and the stalled ones are closed.
        let until = Instant::now() + std::time::Duration::from_secs(120);
        let mut slowest = std::time::Duration::ZERO;
        loop {
            let asked = Instant::now();
            let st = c.status(ServicesParams::default()).await.unwrap();
            slowest = slowest.max(asked.elapsed());
            assert_eq!(st.len(), 1);
            let open = c.daemon_status().await.unwrap().connections;
            if open == 1 {
                break;
            }
            assert!(
                Instant::now() < until,
                "{open} connections still open; the stalled ones must be closed \
                 (peak RSS grew by {} MiB)",
                peak_rss(d.pid()).saturating_sub(before) / MIB
            );
            async_io::Timer::after(std::time::Duration::from_millis(200)).await;
        }
        let grown = peak_rss(d.pid()).saturating_sub(before);
        eprintln!(
            "{stalled} stalled logs -f clients: peak RSS grew by {} MiB, slowest status {slowest:?}",
            grown / MIB
        );
        assert!(grown < 128 * MIB, "peak RSS grew by {} MiB", grown / MIB);
        let addr = c.daemon_status().await.unwrap().metrics_address.unwrap();
        let body = http_get(&addr, "/metrics");
        assert!(
            body.lines()
                .any(|l| l.contains("stage=\"stalled\"") && l.ends_with(&format!(" {stalled}"))),
            "{body}"
        );
        drop(silent);
    });
}
