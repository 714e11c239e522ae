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
/// At most this much of a file is read per look while following (the rest at
/// the next), and per chunk of history.
const MAX_FOLLOW_BYTES: u64 = 1 << 20;
/// History lines read ahead of the client at a time.
const HISTORY_BATCH: usize = 1024;

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
            f(
                OutputStream::Harness,
                service_orchestration::manager::LIFECYCLE_LOG_STEM,
            ),
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

/// A stamps file (`END_OFFSET MILLIS` lines in offset order), searched by
/// bisection so that neither a long history of checkpoints nor a long log is
/// read whole.
struct StampFile {
    file: File,
    len: u64,
}

/// One checkpoint: where its line starts in the stamps file, the log offset, the time.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    at: u64,
    offset: u64,
    ms: u64,
}

/// Longest stamps line looked at; real ones are at most 41 bytes.
const MAX_STAMP_LINE: usize = 128;

impl StampFile {
    fn open(path: &Path) -> Option<StampFile> {
        let file = File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        Some(StampFile { file, len })
    }

    fn parse(bytes: &[u8]) -> Option<(u64, u64)> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut it = text.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }

    /// The first well-formed checkpoint whose line starts at or after byte `pos`.
    fn at_or_after(&self, pos: u64) -> Option<Stamp> {
        use std::os::unix::fs::FileExt;
        // The start of the first line at or after `pos`.
        let mut start = pos;
        let mut buf = [0u8; MAX_STAMP_LINE];
        if pos > 0 {
            loop {
                let n = self.file.read_at(&mut buf, start - 1).ok()?;
                if n == 0 {
                    return None;
                }
                match buf[..n].iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        start += i as u64;
                        break;
                    }
                    None => start += n as u64,
                }
            }
        }
        while start < self.len {
            let n = self.file.read_at(&mut buf, start).ok()?;
            let line_len = buf[..n].iter().position(|b| *b == b'\n')?;
            if let Some((offset, ms)) = Self::parse(&buf[..line_len]) {
                return Some(Stamp {
                    at: start,
                    offset,
                    ms,
                });
            }
            start += line_len as u64 + 1;
        }
        None
    }

    /// The checkpoint whose line ends just before byte `pos` (a line start).
    fn before(&self, pos: u64) -> Option<Stamp> {
        use std::os::unix::fs::FileExt;
        let from = pos.saturating_sub(MAX_STAMP_LINE as u64);
        let mut buf = [0u8; MAX_STAMP_LINE];
        let n = self
            .file
            .read_at(&mut buf[..(pos - from) as usize], from)
            .ok()?;
        let body = buf[..n].strip_suffix(b"\n")?;
        let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if start == 0 && from > 0 {
            return None;
        }
        let (offset, ms) = Self::parse(&body[start..])?;
        Some(Stamp {
            at: from + start as u64,
            offset,
            ms,
        })
    }

    /// The first checkpoint for which `pred` holds (`pred` is false, then true,
    /// along the file).
    fn first(&self, pred: impl Fn(&Stamp) -> bool) -> Option<Stamp> {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.at_or_after(mid) {
                Some(s) if !pred(&s) => lo = mid + 1,
                _ => hi = mid,
            }
        }
        self.at_or_after(lo)
    }

    /// Checkpoints from `first` on, up to and including the first at or past log offset `end`.
    fn run_until(&self, first: Stamp, end: u64) -> Vec<(u64, u64)> {
        let mut out = vec![(first.offset, first.ms)];
        let mut pos = first.at;
        let mut last = first.offset;
        while last < end {
            let Some(next) = self.at_or_after(pos + 1) else {
                break;
            };
            out.push((next.offset, next.ms));
            last = next.offset;
            pos = next.at;
        }
        out
    }
}

/// The last checkpoint's log offset (0 without one).
fn last_stamp(path: &Path) -> u64 {
    StampFile::open(path)
        .and_then(|f| f.before(f.len))
        .map_or(0, |s| s.offset)
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
                let last = last_stamp(&f.stamps);
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

/// Complete lines of `path` in `from..to`: `(end offset, line)`, and the offset
/// after the last complete line. A line longer than the whole range is cut
/// there, so a reader always advances.
fn read_lines(path: &Path, from: u64, to: u64) -> (Vec<(u64, Vec<u8>)>, u64) {
    let mut buf = Vec::new();
    let Ok(mut f) = File::open(path) else {
        return (Vec::new(), from);
    };
    if f.seek(SeekFrom::Start(from)).is_err()
        || f.take(to.saturating_sub(from))
            .read_to_end(&mut buf)
            .is_err()
    {
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
    if lines.is_empty() && buf.len() as u64 >= MAX_FOLLOW_BYTES {
        let end = from + buf.len() as u64;
        return (vec![(end, buf)], end);
    }
    (lines, from + start as u64)
}

/// Calls `visit` with the position of each newline in `floor..to` of `file`,
/// from the last backwards, while it returns true. Reads in chunks.
fn newlines_backwards(file: &File, floor: u64, to: u64, mut visit: impl FnMut(u64) -> bool) {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 64 << 10;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut hi = to;
    while hi > floor {
        let lo = hi.saturating_sub(CHUNK).max(floor);
        let chunk = &mut buf[..(hi - lo) as usize];
        if file.read_exact_at(chunk, lo).is_err() {
            return;
        }
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b == b'\n' && !visit(lo + i as u64) {
                return;
            }
        }
        hi = lo;
    }
}

/// Where history reading of one file starts and ends: `(start, end)`, both
/// line boundaries; `end` is where following continues. Reads only the end of
/// the file (for `tail`) and bisects the stamps (for `since`).
fn history_range(f: &LogFile, query: &LogQuery) -> (u64, u64) {
    let Ok(file) = File::open(&f.path) else {
        return (0, 0);
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let floor = size.saturating_sub(MAX_HISTORY_BYTES);
    // The newline closing the last complete line, then those before it, as far as needed.
    let want = query.tail.map_or(1, |n| n.saturating_add(1));
    let mut newlines = Vec::new();
    newlines_backwards(&file, floor, size, |p| {
        newlines.push(p);
        newlines.len() < want
    });
    let Some(&last) = newlines.first() else {
        // No complete line in the window.
        return if floor == 0 { (0, 0) } else { (size, size) };
    };
    let end = last + 1;
    let mut start = match query.tail {
        Some(n) if newlines.len() > n => newlines[n] + 1,
        Some(_) if floor == 0 => 0,
        // Fewer lines than asked for in the window: from its first line boundary.
        Some(_) => after_newline_at_or_after(&file, floor, end),
        None if floor == 0 => 0,
        None => after_newline_at_or_after(&file, floor, end),
    };
    if let Some(since) = query.since_ms
        && let Some(stamps) = StampFile::open(&f.stamps)
    {
        // Lines up to the last checkpoint before `since` are older than it.
        let older = match stamps.first(|s| s.ms >= since) {
            Some(first) => stamps.before(first.at).map_or(0, |s| s.offset),
            None => stamps.before(stamps.len).map_or(0, |s| s.offset),
        };
        if older > start {
            // The line holding byte `older` starts after the newline before it.
            let mut line_start = floor;
            newlines_backwards(&file, floor, older.min(end), |p| {
                line_start = p + 1;
                false
            });
            start = start.max(line_start);
        }
    }
    (start.min(end), end)
}

/// The offset after the first newline at or after `from` (at most `end`).
fn after_newline_at_or_after(file: &File, from: u64, end: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 8192];
    let mut pos = from.saturating_sub(1);
    while pos < end {
        match file.read_at(&mut buf, pos) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
                    return (pos + i as u64 + 1).min(end);
                }
                pos += n as u64;
            }
        }
    }
    end
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

/// One file's part of a history read: the lines of its range not yet sent,
/// read a chunk at a time.
struct Cursor {
    pos: u64,
    end: u64,
    /// Read and not yet sent: `(time, end offset, line)`.
    lines: std::collections::VecDeque<(u64, u64, Vec<u8>)>,
}

/// Reads the history of log files in time order, a batch at a time, holding
/// at most one chunk (`MAX_FOLLOW_BYTES`) of each file in memory.
pub struct HistoryReader {
    files: Vec<LogFile>,
    cursors: Vec<Cursor>,
    since_ms: Option<u64>,
    now: u64,
}

impl HistoryReader {
    /// A reader of what `query` asks of `files` (blocking: finds the ranges), and
    /// the offset of each file where following continues. Reads only what the
    /// query needs: the last `tail` lines of each file (found by reading
    /// backwards), from the checkpoint before `since_ms` on, and never more than
    /// the last `MAX_HISTORY_BYTES` of a file.
    pub fn new(files: &[LogFile], query: &LogQuery) -> (HistoryReader, Vec<u64>) {
        let mut offsets = Vec::with_capacity(files.len());
        let cursors = files
            .iter()
            .map(|f| {
                let (start, end) = history_range(f, query);
                offsets.push(end);
                Cursor {
                    pos: start,
                    end,
                    lines: Default::default(),
                }
            })
            .collect();
        let reader = HistoryReader {
            files: files.to_vec(),
            cursors,
            since_ms: query.since_ms,
            now: now_ms(),
        };
        (reader, offsets)
    }

    /// Reads the next chunk of file `fi` if it has nothing buffered.
    fn fill(&mut self, fi: usize) {
        let f = &self.files[fi];
        let c = &mut self.cursors[fi];
        while c.lines.is_empty() && c.pos < c.end {
            let to = c.end.min(c.pos + MAX_FOLLOW_BYTES);
            let (lines, next) = read_lines(&f.path, c.pos, to);
            let stamps = StampFile::open(&f.stamps)
                .and_then(|s| {
                    let first = s.first(|st| st.offset > c.pos)?;
                    Some(s.run_until(first, next))
                })
                .unwrap_or_default();
            for (off, line) in lines {
                let ts = stamp_for(&stamps, off).unwrap_or(self.now);
                if self.since_ms.is_none_or(|s| ts >= s) {
                    c.lines.push_back((ts, off, line));
                }
            }
            // Always advance, also past a range that yields no line.
            c.pos = if next > c.pos { next } else { c.end };
        }
    }

    /// Up to `max` more lines in time order (within one file, file order);
    /// empty when the history is exhausted. Blocking file I/O.
    pub fn next_batch(&mut self, max: usize) -> Vec<LogItem> {
        let mut out = Vec::new();
        while out.len() < max {
            for fi in 0..self.cursors.len() {
                self.fill(fi);
            }
            let next = (0..self.cursors.len())
                .filter_map(|fi| {
                    let &(ts, off, _) = self.cursors[fi].lines.front()?;
                    Some((ts, fi, off))
                })
                .min();
            let Some((ts, fi, _)) = next else {
                break;
            };
            if let Some((_, _, line)) = self.cursors[fi].lines.pop_front() {
                out.push(item(&self.files[fi], ts, &line));
            }
        }
        out
    }
}

/// Reads the history of `files` (blocking): lines in time order, and the
/// offset of each file where following continues. With `tail`, only the last
/// `tail` lines of each service (see [`HistoryReader::new`] for what is read).
pub fn history(files: &[LogFile], query: &LogQuery) -> (Vec<LogItem>, Vec<u64>) {
    let (mut reader, offsets) = HistoryReader::new(files, query);
    let mut items = Vec::new();
    loop {
        let batch = reader.next_batch(HISTORY_BATCH);
        if batch.is_empty() {
            break;
        }
        items.extend(batch);
    }
    if let Some(n) = query.tail {
        let mut per_service: std::collections::HashMap<ServiceName, usize> = Default::default();
        let mut keep = vec![false; items.len()];
        for (i, it) in items.iter().enumerate().rev() {
            let c = per_service.entry(it.service.clone()).or_default();
            if *c < n {
                *c += 1;
                keep[i] = true;
            }
        }
        let mut k = keep.into_iter();
        items.retain(|_| k.next().unwrap_or(false));
    }
    (items, offsets)
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
    let mut offsets = if query.tail.is_some() {
        // The last lines per service are known only at the end; the read is
        // bounded by `tail` lines per file.
        let files2 = files.clone();
        let (items, offsets) = blocking::unblock(move || history(&files2, &query)).await;
        for it in items {
            if !out.send(StreamItem::Log(it)).await {
                return;
            }
        }
        offsets
    } else {
        // Everything (or everything since): in batches, never all in memory.
        let files2 = files.clone();
        let (mut reader, offsets) =
            blocking::unblock(move || HistoryReader::new(&files2, &query)).await;
        loop {
            let (r, batch) = blocking::unblock(move || {
                let batch = reader.next_batch(HISTORY_BATCH);
                (reader, batch)
            })
            .await;
            reader = r;
            if batch.is_empty() {
                break;
            }
            for it in batch {
                if !out.send(StreamItem::Log(it)).await {
                    return;
                }
            }
        }
        offsets
    };
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
                let (lines, end) = read_lines(&f.path, off, size.min(off + MAX_FOLLOW_BYTES));
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
        assert_eq!(fs::read_to_string(&out.stamps).unwrap().lines().count(), 2);
    }

    #[test]
    fn tail_and_since_read_from_the_right_places_of_long_files() {
        let dir = tempfile::tempdir().unwrap();
        let [out, _, _] = files(dir.path());
        let mut st = Stamper::new([out.clone()]);
        // 100 batches of 1000 lines (well over one backwards chunk), stamped at 1000, 2000, ...
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out.path)
            .unwrap();
        for batch in 1..=100u64 {
            for i in 0..1000 {
                writeln!(f, "b{batch} l{i}").unwrap();
            }
            st.tick(batch * 1000, None);
        }
        // A stray line in the stamps file is skipped, not fatal.
        let mut ts = OpenOptions::new().append(true).open(&out.stamps).unwrap();
        writeln!(ts, "garbage").unwrap();
        f.write_all(b"partial").unwrap();
        let all = [out.clone()];
        let q = |tail, since_ms| LogQuery { tail, since_ms };
        let lines =
            |items: Vec<LogItem>| -> Vec<String> { items.into_iter().map(|i| i.line).collect() };

        let (items, offsets) = history(&all, &q(Some(3), None));
        assert_eq!(lines(items), ["b100 l997", "b100 l998", "b100 l999"]);
        assert_eq!(
            offsets[0],
            fs::metadata(&out.path).unwrap().len() - "partial".len() as u64
        );

        let (items, _) = history(&all, &q(None, Some(99_500)));
        let got = lines(items);
        assert_eq!(got.len(), 1000);
        assert_eq!(got[0], "b100 l0");
        let (items, _) = history(&all, &q(None, Some(51_000)));
        assert_eq!(items.len(), 50_000);
        assert_eq!(items[0].line, "b51 l0");
        assert_eq!(items[0].ts_ms, 51_000);
        let (items, _) = history(&all, &q(Some(2), Some(51_000)));
        assert_eq!(lines(items), ["b100 l998", "b100 l999"]);
        let (items, _) = history(&all, &q(Some(5), Some(200_000)));
        assert!(items.is_empty());
        let (items, _) = history(&all, &q(None, Some(0)));
        assert_eq!(items.len(), 100_000);
    }
}
