//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use command_executor::{Command, EventStream, ProcessEvent, ProcessIdentity};
use futures_lite::{FutureExt, StreamExt};

/// `sh -c SCRIPT`.
pub fn sh(script: &str) -> Command {
    Command::new("sh").arg("-c").arg(script)
}

/// Runs `fut`, failing the test if it takes longer than `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    let timeout = async {
        async_io::Timer::after(Duration::from_secs(secs)).await;
        panic!("timed out after {secs}s: {what}");
    };
    fut.or(timeout).await
}

/// Reads events until (and including) the first for which `stop` is true.
pub async fn events_until(
    events: &mut EventStream,
    secs: u64,
    mut stop: impl FnMut(&ProcessEvent) -> bool,
) -> Vec<ProcessEvent> {
    within(secs, "waiting for an event", async {
        let mut seen = Vec::new();
        while let Some(ev) = events.next().await {
            let done = stop(&ev);
            seen.push(ev);
            if done {
                return seen;
            }
        }
        panic!("stream ended before the awaited event; saw {seen:?}");
    })
    .await
}

/// Reads every event up to the end of the stream.
pub async fn all_events(events: &mut EventStream, secs: u64) -> Vec<ProcessEvent> {
    within(secs, "waiting for the stream to end", async {
        let mut seen = Vec::new();
        while let Some(ev) = events.next().await {
            seen.push(ev);
        }
        seen
    })
    .await
}

/// The text of output lines among `events`.
pub fn lines(events: &[ProcessEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ProcessEvent::Output(l) => Some(l.text().into_owned()),
            _ => None,
        })
        .collect()
}

/// Checks the stream contract: `Started` first, exactly one `Exited`, last.
pub fn assert_well_formed(events: &[ProcessEvent]) {
    assert!(
        matches!(events.first(), Some(ProcessEvent::Started { .. })),
        "first event is not Started: {:?}",
        events.first()
    );
    let exits = events
        .iter()
        .filter(|e| matches!(e, ProcessEvent::Exited(_)))
        .count();
    assert_eq!(exits, 1, "expected exactly one Exited");
    assert!(matches!(events.last(), Some(ProcessEvent::Exited(_))));
}

fn stat_fields(pid: u32) -> Option<(char, i64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.first()?.chars().next()?, f.get(2)?.parse().ok()?))
}

/// Live (non-zombie) processes in process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((state, pgrp)) = stat_fields(pid)
            && pgrp == i64::from(pgid)
            && state != 'Z'
            && state != 'X'
        {
            out.push(pid);
        }
    }
    out
}

/// True while `pid` is a live (non-zombie) process.
pub fn alive(pid: u32) -> bool {
    matches!(stat_fields(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Waits (with a deadline) until `cond` holds.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    within(secs, what, async {
        while !cond() {
            async_io::Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Kills a whole group when dropped, so a failing test leaves nothing
/// behind. Only while its leader is still the very process started (a pid
/// that was reused since is left alone).
pub struct GroupGuard(pub ProcessIdentity);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let same = ProcessIdentity::of(self.0.pid).is_ok_and(|now| now == self.0);
        if same
            && let Some(pid) = i32::try_from(self.0.pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}
