//! Events of a running process and the bounded queue that carries them.
//!
//! The pump (see `pump`) fills a [`Shared`] queue; the [`EventStream`]
//! empties it. The pump never waits for the consumer: when the queue is full,
//! lines are dropped and counted (pipes), or left in the log file until there
//! is room (files).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use event_listener::Event;
use futures_lite::Stream;
use harness_core::{ExitStatus, OutputLine, OutputStream};
use serde::{Deserialize, Serialize};

/// Something that happened to a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    /// The process runs (first event of every stream).
    Started {
        /// Its pid.
        pid: u32,
    },
    /// One line of its stdout or stderr.
    Output(OutputLine),
    /// This many lines were dropped here because nobody read the stream fast enough.
    Dropped {
        /// How many lines.
        lines: u64,
    },
    /// The process ended (exactly once, always the last event).
    Exited(ExitStatus),
}

/// Byte offsets in the stdout and stderr log files up to which lines were
/// delivered by an [`EventStream`]. Persist them to resume following from there
/// ([`FollowFrom::Offset`](crate::FollowFrom::Offset)) with no gap and no repeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogOffsets {
    /// Offset in the stdout log.
    pub stdout: u64,
    /// Offset in the stderr log.
    pub stderr: u64,
}

/// Most bytes of line content queued at once (besides the line count limit).
const QUEUE_BYTES: usize = 16 << 20;

pub(crate) enum Item {
    /// A line and the offset just after it in its stream.
    Line(OutputLine, u64),
    Dropped(u64),
}

struct QueueState {
    items: VecDeque<Item>,
    bytes: usize,
    dropped: u64,
    finished: Option<ExitStatus>,
    waker: Option<Waker>,
    consumer_gone: bool,
    /// The producer waits for room (see [`Shared::wait_for_room`]).
    producer_waiting: bool,
}

/// Called when the consumer makes room for a producer that waits for it.
pub(crate) type SpaceWake = Box<dyn Fn() + Send + Sync>;

/// The queue between the pump and the [`EventStream`].
pub(crate) struct Shared {
    state: Mutex<QueueState>,
    /// Wakes a producer that waits for room.
    space_wake: Option<SpaceWake>,
    capacity: usize,
}

impl Shared {
    /// A queue of `capacity` lines whose producer never waits for room.
    pub(crate) fn new(capacity: usize) -> Arc<Shared> {
        Self::with_space_wake(capacity, None)
    }

    /// A queue whose producer may wait for room: `space_wake` is called when
    /// the consumer takes items out after [`wait_for_room`](Self::wait_for_room).
    pub(crate) fn with_space_wake(capacity: usize, space_wake: Option<SpaceWake>) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                bytes: 0,
                dropped: 0,
                finished: None,
                waker: None,
                consumer_gone: false,
                producer_waiting: false,
            }),
            space_wake,
            capacity: capacity.max(1),
        })
    }

    /// Called by a producer that found no room: true if it is now registered
    /// to be woken when the consumer takes items out, false if there is room
    /// already (or the consumer is gone) and it should look again now.
    pub(crate) fn wait_for_room(&self) -> bool {
        let mut st = self.lock();
        if st.consumer_gone || (st.items.len() < self.capacity && st.bytes < QUEUE_BYTES) {
            return false;
        }
        st.producer_waiting = true;
        true
    }

    fn wake_producer(&self) {
        if let Some(wake) = &self.space_wake {
            wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every update is a single push/pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Room left: `(lines, bytes)`, or `None` when the consumer is gone.
    pub(crate) fn room(&self) -> Option<(usize, usize)> {
        let st = self.lock();
        if st.consumer_gone {
            return None;
        }
        Some((
            self.capacity.saturating_sub(st.items.len()),
            QUEUE_BYTES.saturating_sub(st.bytes),
        ))
    }

    /// Appends lines (in order, `bytes` of content in all) and then counts
    /// `dropped` more lines as lost.
    pub(crate) fn push(&self, lines: Vec<Item>, bytes: usize, dropped: u64) {
        let waker = {
            let mut st = self.lock();
            if st.consumer_gone {
                return;
            }
            if !lines.is_empty() && st.dropped > 0 {
                let d = std::mem::take(&mut st.dropped);
                st.items.push_back(Item::Dropped(d));
            }
            if st.items.is_empty() {
                // Hand the batch over as it is, without moving each line.
                st.items = VecDeque::from(lines);
            } else {
                st.items.extend(lines);
            }
            st.bytes += bytes;
            st.dropped += dropped;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The producer is done: everything is pushed and the process ended.
    pub(crate) fn finish(&self, exit: ExitStatus) {
        let waker = {
            let mut st = self.lock();
            st.finished = Some(exit);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The events of one process: `Started`, then output lines (and `Dropped`
/// counts), then exactly one `Exited`, after which the stream ends.
///
/// Reading is optional: a stream nobody polls never slows the process down.
/// Dropping the stream stops the delivery of events but not the process.
pub struct EventStream {
    shared: Arc<Shared>,
    started: Option<u32>,
    local: VecDeque<Item>,
    offsets: LogOffsets,
    done: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("offsets", &self.offsets)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    pub(crate) fn new(shared: Arc<Shared>, pid: u32, offsets: LogOffsets) -> Self {
        EventStream {
            shared,
            started: Some(pid),
            local: VecDeque::new(),
            offsets,
            done: false,
        }
    }

    /// Byte offsets just past the last line delivered from each stream: in
    /// the log files when output goes to files (absolute file offsets), or
    /// counted from the start of each pipe.
    pub fn offsets(&self) -> LogOffsets {
        self.offsets
    }

    fn deliver(&mut self, item: Item) -> ProcessEvent {
        match item {
            Item::Line(line, end) => {
                match line.stream {
                    OutputStream::Stdout => self.offsets.stdout = end,
                    OutputStream::Stderr => self.offsets.stderr = end,
                    // Never read from a process's files.
                    OutputStream::Harness => {}
                }
                ProcessEvent::Output(line)
            }
            Item::Dropped(lines) => ProcessEvent::Dropped { lines },
        }
    }
}

impl Stream for EventStream {
    type Item = ProcessEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProcessEvent>> {
        let this = self.get_mut();
        if let Some(pid) = this.started.take() {
            return Poll::Ready(Some(ProcessEvent::Started { pid }));
        }
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(item) = this.local.pop_front() {
            return Poll::Ready(Some(this.deliver(item)));
        }
        let mut st = this.shared.lock();
        if !st.items.is_empty() {
            std::mem::swap(&mut st.items, &mut this.local);
            st.bytes = 0;
            let waiting = std::mem::take(&mut st.producer_waiting);
            drop(st);
            if waiting {
                this.shared.wake_producer();
            }
            let item = this
                .local
                .pop_front()
                .expect("swapped in a non-empty queue");
            return Poll::Ready(Some(this.deliver(item)));
        }
        if let Some(exit) = st.finished {
            if st.dropped > 0 {
                let lines = std::mem::take(&mut st.dropped);
                return Poll::Ready(Some(ProcessEvent::Dropped { lines }));
            }
            this.done = true;
            return Poll::Ready(Some(ProcessEvent::Exited(exit)));
        }
        match &mut st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let waiting = {
            let mut st = self.shared.lock();
            st.consumer_gone = true;
            st.items.clear();
            st.bytes = 0;
            std::mem::take(&mut st.producer_waiting)
        };
        if waiting {
            self.shared.wake_producer();
        }
    }
}

/// How a process ended, once known; awaitable by any number of waiters.
pub(crate) struct ExitCell {
    status: Mutex<Option<ExitStatus>>,
    event: Event,
}

impl ExitCell {
    pub(crate) fn new() -> Arc<ExitCell> {
        Arc::new(ExitCell {
            status: Mutex::new(None),
            event: Event::new(),
        })
    }

    pub(crate) fn get(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set(&self, status: ExitStatus) {
        {
            let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            if s.is_none() {
                *s = Some(status);
            }
        }
        self.event.notify(usize::MAX);
    }

    pub(crate) async fn wait(&self) -> ExitStatus {
        loop {
            if let Some(s) = self.get() {
                return s;
            }
            let listener = self.event.listen();
            if let Some(s) = self.get() {
                return s;
            }
            listener.await;
        }
    }
}

impl std::fmt::Debug for ExitCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExitCell")
            .field("status", &self.get())
            .finish()
    }
}

/// Splits a byte stream into lines, bounded in memory: a line longer than
/// `max` keeps its first `max` bytes and is marked truncated; the rest up to
/// the newline is skipped.
pub(crate) struct LineSplitter {
    pub(crate) stream: OutputStream,
    partial: Vec<u8>,
    truncated: bool,
    max: usize,
    /// Offset just past the last byte fed.
    pub(crate) pos: u64,
}

impl LineSplitter {
    pub(crate) fn new(stream: OutputStream, max: usize, pos: u64) -> Self {
        LineSplitter {
            stream,
            partial: Vec::new(),
            truncated: false,
            max: max.max(1),
            pos,
        }
    }

    fn append(&mut self, seg: &[u8]) {
        let room = self.max - self.partial.len();
        if seg.len() > room {
            self.partial.extend_from_slice(&seg[..room]);
            self.truncated = true;
        } else {
            self.partial.extend_from_slice(seg);
        }
    }

    /// Feeds bytes; calls `emit(line, truncated, end_offset)` for each complete line.
    pub(crate) fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8], bool, u64)) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let seg = &data[..i];
                    self.pos += i as u64 + 1;
                    if self.partial.is_empty() && !self.truncated {
                        if seg.len() > self.max {
                            emit(&seg[..self.max], true, self.pos);
                        } else {
                            emit(seg, false, self.pos);
                        }
                    } else {
                        self.append(seg);
                        emit(&self.partial, self.truncated, self.pos);
                        self.partial.clear();
                        self.truncated = false;
                    }
                    data = &data[i + 1..];
                }
                None => {
                    self.append(data);
                    self.pos += data.len() as u64;
                    break;
                }
            }
        }
    }

    /// Forgets any partial line and continues from `pos`.
    pub(crate) fn restart_at(&mut self, pos: u64) {
        self.partial.clear();
        self.truncated = false;
        self.pos = pos;
    }

    /// Emits a last line that has no newline, if any.
    pub(crate) fn flush(&mut self, mut emit: impl FnMut(&[u8], bool, u64)) {
        if !self.partial.is_empty() || self.truncated {
            emit(&self.partial, self.truncated, self.pos);
            self.partial.clear();
            self.truncated = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool, u64)> {
        let mut s = LineSplitter::new(OutputStream::Stdout, max, 0);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |l, t, e| out.push((l.to_vec(), t, e)));
        }
        s.flush(|l, t, e| out.push((l.to_vec(), t, e)));
        out
    }

    #[test]
    fn splits_across_chunks_and_bounds_lines() {
        let out = split(4, &[b"ab", b"c\nabcdefg", b"hij\n\nxyz"]);
        assert_eq!(
            out,
            vec![
                (b"abc".to_vec(), false, 4),
                (b"abcd".to_vec(), true, 15),
                (b"".to_vec(), false, 16),
                (b"xyz".to_vec(), false, 19),
            ]
        );
        let out = split(3, &[b"abcdef\n"]);
        assert_eq!(out, vec![(b"abc".to_vec(), true, 7)]);
    }

    #[test]
    fn a_producer_waiting_for_room_is_woken_once_the_consumer_takes_items() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = woken.clone();
        let shared = Shared::with_space_wake(
            2,
            Some(Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            })),
        );
        let line = |n: u64| {
            Item::Line(
                OutputLine {
                    stream: OutputStream::Stdout,
                    bytes: b"x".to_vec(),
                    truncated: false,
                },
                n,
            )
        };
        // Room left: no waiting.
        assert!(!shared.wait_for_room());
        shared.push(vec![line(2), line(4)], 2, 0);
        assert_eq!(shared.room(), Some((0, QUEUE_BYTES - 2)));
        assert!(shared.wait_for_room());
        let mut stream = EventStream::new(shared.clone(), 1, LogOffsets::default());
        let mut cx = Context::from_waker(Waker::noop());
        let mut next = || Pin::new(&mut stream).poll_next(&mut cx);
        assert!(matches!(
            next(),
            Poll::Ready(Some(ProcessEvent::Started { .. }))
        ));
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        assert!(matches!(next(), Poll::Ready(Some(ProcessEvent::Output(_)))));
        assert_eq!(
            woken.load(Ordering::SeqCst),
            1,
            "taking items wakes the producer"
        );
        assert!(matches!(next(), Poll::Ready(Some(ProcessEvent::Output(_)))));
        assert!(next().is_pending());
        // Not waiting: taking items does not call it again.
        shared.push(vec![line(6)], 1, 0);
        assert!(matches!(next(), Poll::Ready(Some(ProcessEvent::Output(_)))));
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        // A stream dropped while the producer waits wakes it too.
        shared.push(vec![line(8), line(10)], 2, 0);
        assert!(shared.wait_for_room());
        drop(stream);
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        // The consumer is gone: nothing to wait for.
        assert!(!shared.wait_for_room());
    }

    proptest::proptest! {
        /// Any chunking of any bytes gives the lines a plain split gives, each
        /// cut to `max`, with the offset just past each line.
        #[test]
        fn chunking_never_changes_the_lines(
            data in proptest::collection::vec(proptest::prop_oneof![proptest::num::u8::ANY, proptest::strategy::Just(b'\n')], 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..8),
            max in 1usize..20,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= data.len()).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&data[at..c]);
                at = c;
            }
            chunks.push(&data[at..]);
            let got = split(max, &chunks);

            let mut want = Vec::new();
            let mut start = 0usize;
            for (i, &b) in data.iter().enumerate() {
                if b == b'\n' {
                    let line = &data[start..i];
                    want.push((line[..line.len().min(max)].to_vec(), line.len() > max, i as u64 + 1));
                    start = i + 1;
                }
            }
            if start < data.len() {
                let line = &data[start..];
                want.push((line[..line.len().min(max)].to_vec(), line.len() > max, data.len() as u64));
            }
            proptest::prop_assert_eq!(got, want);
        }
    }
}
