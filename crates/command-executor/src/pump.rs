//! Background readers: drain a child's pipes, or follow its log files, into
//! the [`Shared`] queue; finish with the exit status.
//!
//! Each launched or attached process gets one thread that runs
//! `block_on(zip(exit_watcher, reader))` (ADR 006); the async-io reactor
//! thread wakes it when a pipe or pidfd is ready.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::{self, FutureExt};
use futures_lite::{AsyncRead, AsyncReadExt};
use harness_core::{OutputLine, OutputStream};

use crate::events::{ExitCell, Item, LineSplitter, Shared};

const CHUNK: usize = 16 * 1024;
/// How often log files are looked at for new bytes while nothing else happens.
pub(crate) const FOLLOW_TICK: Duration = Duration::from_millis(50);
/// After exit, read at most this many chunks more from each pipe (a leftover
/// grandchild may keep writing forever).
const DRAIN_CHUNKS: usize = 1024;

/// Splits `data` and queues its lines. With `may_drop`, lines beyond the room
/// left are dropped and counted; otherwise all are queued.
fn deliver(shared: &Shared, splitter: &mut LineSplitter, data: &[u8], may_drop: bool) {
    let stream = splitter.stream;
    let Some((mut lines_room, mut bytes_room)) = shared.room() else {
        splitter.feed(data, |_, _, _| {});
        return;
    };
    if !may_drop {
        lines_room = usize::MAX;
        bytes_room = usize::MAX;
    }
    let mut kept = Vec::new();
    let mut kept_bytes = 0usize;
    let mut dropped = 0u64;
    splitter.feed(data, |bytes, truncated, end| {
        if lines_room > 0 && bytes_room >= bytes.len() {
            lines_room -= 1;
            bytes_room -= bytes.len();
            kept_bytes += bytes.len();
            kept.push(Item::Line(
                OutputLine {
                    stream,
                    bytes: bytes.to_vec(),
                    truncated,
                },
                end,
            ));
        } else {
            dropped += 1;
        }
    });
    if !kept.is_empty() || dropped > 0 {
        shared.push(kept, kept_bytes, dropped);
    }
}

fn flush(shared: &Shared, splitter: &mut LineSplitter) {
    let stream = splitter.stream;
    let mut kept = Vec::new();
    let mut kept_bytes = 0;
    splitter.flush(|bytes, truncated, end| {
        kept_bytes += bytes.len();
        kept.push(Item::Line(
            OutputLine {
                stream,
                bytes: bytes.to_vec(),
                truncated,
            },
            end,
        ))
    });
    if !kept.is_empty() {
        shared.push(kept, kept_bytes, 0);
    }
}

/// One pipe being drained.
struct PipeSource<R> {
    reader: Option<R>,
    splitter: LineSplitter,
    buf: Box<[u8]>,
}

impl<R: AsyncRead + Unpin> PipeSource<R> {
    fn new(reader: Option<R>, stream: OutputStream, max_line: usize) -> Self {
        PipeSource {
            reader,
            splitter: LineSplitter::new(stream, max_line, 0),
            buf: vec![0; CHUNK].into_boxed_slice(),
        }
    }

    /// Reads one chunk; never completes once the pipe is closed.
    async fn read(&mut self) -> io::Result<usize> {
        match &mut self.reader {
            Some(r) => r.read(&mut self.buf).await,
            None => future::pending().await,
        }
    }

    /// Handles a read result; false when the pipe is done.
    fn handle(&mut self, shared: &Shared, res: io::Result<usize>) -> bool {
        match res {
            Ok(0) | Err(_) => {
                self.reader = None;
                false
            }
            Ok(n) => {
                deliver(shared, &mut self.splitter, &self.buf[..n], true);
                true
            }
        }
    }

    /// Reads what is already there without waiting.
    async fn drain(&mut self, shared: &Shared) {
        for _ in 0..DRAIN_CHUNKS {
            if self.reader.is_none() {
                break;
            }
            match future::poll_once(self.read()).await {
                Some(res) => {
                    if !self.handle(shared, res) {
                        break;
                    }
                }
                None => break,
            }
        }
        flush(shared, &mut self.splitter);
    }
}

enum Wake {
    Out(io::Result<usize>),
    Err(io::Result<usize>),
    Exit,
}

/// Drains stdout and stderr pipes until the process exits, then what is left
/// in them, then finishes the queue.
pub(crate) async fn pump_pipes<O, E>(
    shared: Arc<Shared>,
    exit: Arc<ExitCell>,
    stdout: Option<O>,
    stderr: Option<E>,
    max_line: usize,
) where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let mut out = PipeSource::new(stdout, OutputStream::Stdout, max_line);
    let mut err = PipeSource::new(stderr, OutputStream::Stderr, max_line);
    loop {
        let wake = {
            let a = async { Wake::Out(out.read().await) };
            let b = async { Wake::Err(err.read().await) };
            let c = async {
                exit.wait().await;
                Wake::Exit
            };
            a.race(b).or(c).await
        };
        match wake {
            Wake::Out(res) => {
                out.handle(&shared, res);
            }
            Wake::Err(res) => {
                err.handle(&shared, res);
            }
            Wake::Exit => break,
        }
    }
    out.drain(&shared).await;
    err.drain(&shared).await;
    shared.finish(exit.wait().await);
}

/// One log file being followed.
pub(crate) struct FileSource {
    file: File,
    splitter: LineSplitter,
}

impl FileSource {
    pub(crate) fn new(file: File, stream: OutputStream, max_line: usize, from: u64) -> Self {
        FileSource {
            file,
            splitter: LineSplitter::new(stream, max_line, from),
        }
    }

    /// The offset following starts from.
    pub(crate) fn start(&self) -> u64 {
        self.splitter.pos
    }

    /// Reads one chunk from the current offset: `Ok(true)` if bytes were read.
    /// A file shorter than the offset was truncated: following restarts at 0.
    fn read_chunk(&mut self, shared: &Shared, buf: &mut [u8]) -> io::Result<bool> {
        let n = self.file.read_at(buf, self.splitter.pos)?;
        if n == 0 {
            if self.file.metadata()?.len() < self.splitter.pos {
                self.splitter.restart_at(0);
            }
            return Ok(false);
        }
        deliver(shared, &mut self.splitter, &buf[..n], false);
        Ok(true)
    }
}

/// Follows log files from their offsets until the process has exited and
/// every file is read to its end, then finishes the queue. Reads only while
/// the queue has room: the file holds the rest, so nothing is dropped.
pub(crate) async fn follow_files(
    shared: Arc<Shared>,
    exit: Arc<ExitCell>,
    mut sources: Vec<FileSource>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let exited = exit.get().is_some();
        if shared.room().is_none() {
            // Nobody listens any more: only the exit matters.
            let status = exit.wait().await;
            shared.finish(status);
            return;
        }
        let mut progressed = false;
        let mut all_read = true;
        for src in &mut sources {
            match shared.room() {
                Some((lines, bytes)) if lines > 0 && bytes > 0 => {}
                _ => {
                    all_read = false;
                    continue;
                }
            }
            // An unreadable file counts as read to its end.
            if let Ok(true) = src.read_chunk(&shared, &mut buf) {
                progressed = true;
                all_read = false;
            }
        }
        if exited && all_read {
            for src in &mut sources {
                flush(&shared, &mut src.splitter);
            }
            shared.finish(exit.wait().await);
            return;
        }
        if !progressed {
            let space = shared.space.listen();
            let tick = async {
                async_io::Timer::after(FOLLOW_TICK).await;
            };
            if exited {
                tick.or(space).await;
            } else {
                let exit_seen = async {
                    exit.wait().await;
                };
                tick.or(space).or(exit_seen).await;
            }
        }
    }
}
