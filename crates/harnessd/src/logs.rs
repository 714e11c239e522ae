//! Service output as `harness logs` reads it: straight from the log files
//! the services write (`<dir>/stdout.log`, `<dir>/stderr.log`), which outlive
//! any daemon. The files are the single source of truth, so a reader that
//! follows them by byte offset sees every line exactly once, across daemon
//! restarts.
//!
//! The files carry no timestamps; a [`Stamper`] appends checkpoints
//! `END_OFFSET MILLIS` to a side file (`stdout.ts`, `stderr.ts`) whenever it
//! sees a file grow. A line's time is that of the first checkpoint at or
//! past its end: exact to the stamping interval while a daemon runs; lines
//! written while none ran get the time the next daemon saw them.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness_core::{OutputStream, ProjectName, ServiceName};
use harness_protocol::{LogItem, StreamItem};

use crate::backend::ItemSink;

/// How often followers and the stamper look at the files.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// At most this much of the end of a file is read for history.
const MAX_HISTORY_BYTES: u64 = 32 << 20;

/// The log files of one service stream.
#[derive(Debug, Clone)]
pub struct LogFile {
    /// The project.
    pub project: ProjectName,
    /// The service.
    pub service: ServiceName,
    /// Which stream.
    pub stream: OutputStream,
    /// The log itself.
    pub path: PathBuf,
    /// Its timestamp checkpoints.
    pub stamps: PathBuf,
}

impl LogFile {
    /// The stdout and stderr files of a service whose logs are in `dir`, and
    /// the file of what harness says about it (`harness.log`: exits, restarts,
    /// failures to start).
    pub fn of_service(project: &ProjectName, service: &ServiceName, dir: &Path) -> [LogFile; 3] {
        let f = |stream, name: &str| LogFile {
            project: project.clone(),
            service: service.clone(),
            stream,
            path: dir.join(format!("{name}.log")),
            stamps: dir.join(format!("{name}.ts")),
        };
        [
            f(OutputStream::Stdout, "stdout"),
            f(OutputStream::Stderr, "stderr"),
            f(OutputStream::Harness, "harness"),
        ]
    }

    fn size(&self) -> u64 {
        fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads the checkpoints of a stamps file, in offset order.
fn read_stamps(path: &Path) -> Vec<(u64, u64)> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect();
    out.sort_by_key(|&(o, _)| o);
    out
}

fn stamp_for(stamps: &[(u64, u64)], end: u64) -> Option<u64> {
    let i = stamps.partition_point(|&(o, _)| o < end);
    stamps.get(i).map(|&(_, t)| t)
}

/// Appends timestamp checkpoints as log files grow.
#[derive(Debug, Default)]
pub struct Stamper {
    files: Vec<(LogFile, u64)>,
}

impl Stamper {
    /// Watches these files, resuming after their last checkpoint.
    pub fn new(files: impl IntoIterator<Item = LogFile>) -> Self {
        let files = files
            .into_iter()
            .map(|f| {
                let last = read_stamps(&f.stamps).last().map(|&(o, _)| o).unwrap_or(0);
                (f, last)
            })
            .collect();
        Stamper { files }
    }

    /// Checks every file once (or those of the services in `only`);
    /// blocking file I/O.
    pub fn tick(&mut self, now: u64, only: Option<&std::collections::BTreeSet<ServiceName>>) {
        for (f, stamped) in &mut self.files {
            if only.is_some_and(|s| !s.contains(&f.service)) {
                continue;
            }
            let size = f.size();
            if size < *stamped {
                // Truncated or replaced: start over.
                let _ = fs::remove_file(&f.stamps);
                *stamped = 0;
            }
            if size > *stamped {
                let appended = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&f.stamps)
                    .and_then(|mut s| writeln!(s, "{size} {now}"));
                if appended.is_ok() {
                    *stamped = size;
                }
            }
        }
    }
}

/// Complete lines of `path` from byte `from`: `(end offset, line)`, and the
/// offset after the last complete line.
fn read_lines(path: &Path, from: u64) -> (Vec<(u64, Vec<u8>)>, u64) {
    let Ok(mut f) = File::open(path) else {
        return (Vec::new(), from);
    };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return (Vec::new(), from);
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return (Vec::new(), from);
    }
    let mut lines = Vec::new();
    let mut start = 0usize;
    for (i, b) in buf.iter().enumerate() {
        if *b == b'\n' {
            let mut line = buf[start..i].to_vec();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push((from + i as u64 + 1, line));
            start = i + 1;
        }
    }
    (lines, from + start as u64)
}

fn item(f: &LogFile, ts_ms: u64, line: &[u8]) -> LogItem {
    LogItem {
        project: f.project.clone(),
        service: f.service.clone(),
        stream: f.stream,
        ts_ms,
        line: String::from_utf8_lossy(line).into_owned(),
    }
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// At most this many of the latest lines per service.
    pub tail: Option<usize>,
    /// Only lines at or after this time.
    pub since_ms: Option<u64>,
}

/// Reads the history of `files` (blocking): lines in time order, and the
/// offset of each file where following continues.
pub fn history(files: &[LogFile], query: &LogQuery) -> (Vec<LogItem>, Vec<u64>) {
    let now = now_ms();
    let mut items: Vec<(u64, usize, u64, LogItem)> = Vec::new();
    let mut offsets = Vec::with_capacity(files.len());
    for (fi, f) in files.iter().enumerate() {
        let size = f.size();
        let mut from = size.saturating_sub(MAX_HISTORY_BYTES);
        if from > 0 {
            // Start at a line boundary.
            let (_, next) = read_lines_bounded(&f.path, from - 1);
            from = next;
        }
        let stamps = read_stamps(&f.stamps);
        let (lines, end) = read_lines(&f.path, from);
        offsets.push(end);
        for (off, line) in lines {
            let ts = stamp_for(&stamps, off).unwrap_or(now);
            if query.since_ms.is_some_and(|s| ts < s) {
                continue;
            }
            items.push((ts, fi, off, item(f, ts, &line)));
        }
    }
    // Time order; within one file, file order.
    items.sort_by_key(|(ts, fi, off, _)| (*ts, *fi, *off));
    if let Some(n) = query.tail {
        let mut per_service: std::collections::HashMap<ServiceName, usize> = Default::default();
        let mut keep = vec![false; items.len()];
        for (i, (_, _, _, it)) in items.iter().enumerate().rev() {
            let c = per_service.entry(it.service.clone()).or_default();
            if *c < n {
                *c += 1;
                keep[i] = true;
            }
        }
        let mut k = keep.into_iter();
        items.retain(|_| k.next().unwrap_or(false));
    }
    (items.into_iter().map(|(_, _, _, it)| it).collect(), offsets)
}

/// The offset just after the first newline at or after `from` (or the end).
fn read_lines_bounded(path: &Path, from: u64) -> (Vec<(u64, Vec<u8>)>, u64) {
    let Ok(mut f) = File::open(path) else {
        return (Vec::new(), from);
    };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return (Vec::new(), from);
    }
    let mut buf = [0u8; 8192];
    let mut pos = from;
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => return (Vec::new(), pos),
            Ok(n) => {
                if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
                    return (Vec::new(), pos + i as u64 + 1);
                }
                pos += n as u64;
            }
        }
    }
}

/// Sends the history, then (with `follow`) new lines as they are written,
/// until the client goes away.
/// Sends the lines of `files` matching `query` to `out`; with `follow`, then every new line
/// until nobody listens or `closed` resolves (the project was taken down), after one last
/// read so the final lines of its services are not lost.
pub async fn stream_logs(
    files: Vec<LogFile>,
    query: LogQuery,
    follow: bool,
    out: ItemSink,
    closed: impl std::future::Future<Output = ()>,
) {
    let files2 = files.clone();
    let (items, mut offsets) = blocking::unblock(move || history(&files2, &query)).await;
    for it in items {
        if !out.send(StreamItem::Log(it)).await {
            return;
        }
    }
    if !follow {
        return;
    }
    let mut closed = std::pin::pin!(closed);
    loop {
        let last = futures_lite::future::or(
            async {
                async_io::Timer::after(POLL_INTERVAL).await;
                false
            },
            async {
                (&mut closed).await;
                true
            },
        )
        .await;
        let files2 = files.clone();
        let offs = offsets.clone();
        let (items, new_offsets) = blocking::unblock(move || {
            let now = now_ms();
            let mut items = Vec::new();
            let mut new_offsets = Vec::with_capacity(offs.len());
            for (f, &off) in files2.iter().zip(&offs) {
                let size = f.size();
                let off = if size < off { 0 } else { off };
                if size == off {
                    new_offsets.push(off);
                    continue;
                }
                let (lines, end) = read_lines(&f.path, off);
                for (_, line) in lines {
                    items.push(item(f, now, &line));
                }
                new_offsets.push(end);
            }
            (items, new_offsets)
        })
        .await;
        offsets = new_offsets;
        for it in items {
            if !out.send(StreamItem::Log(it)).await {
                return;
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> [LogFile; 3] {
        LogFile::of_service(
            &ProjectName::new("p").unwrap(),
            &ServiceName::new("s").unwrap(),
            dir,
        )
    }

    #[test]
    fn history_orders_by_stamp_and_tails_per_service() {
        let dir = tempfile::tempdir().unwrap();
        let [out, err, _] = files(dir.path());
        fs::write(&out.path, "a\nb\n").unwrap();
        let mut st = Stamper::new([out.clone(), err.clone()]);
        st.tick(1000, None);
        fs::write(&err.path, "e1\n").unwrap();
        st.tick(2000, None);
        let mut f = OpenOptions::new().append(true).open(&out.path).unwrap();
        f.write_all(b"c\npartial").unwrap();
        st.tick(3000, None);
        let all = [out.clone(), err.clone()];
        let (items, offsets) = history(&all, &LogQuery::default());
        let lines: Vec<_> = items.iter().map(|i| (i.line.as_str(), i.ts_ms)).collect();
        assert_eq!(lines, [("a", 1000), ("b", 1000), ("e1", 2000), ("c", 3000)]);
        assert_eq!(offsets, [6, 3]);
        let (items, _) = history(
            &all,
            &LogQuery {
                tail: Some(2),
                since_ms: None,
            },
        );
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].line, "c");
        let (items, _) = history(
            &all,
            &LogQuery {
                tail: None,
                since_ms: Some(2000),
            },
        );
        assert_eq!(items.len(), 2);
        // A restarted stamper resumes after its last checkpoint.
        let mut st = Stamper::new(all.clone());
        st.tick(4000, None);
        assert_eq!(read_stamps(&out.stamps).len(), 2);
    }
}
