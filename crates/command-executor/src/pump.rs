//! The pump: one thread for every launched or attached process (ADR 016). It
//! drains pipes, follows log files into each process's [`Shared`] queue,
//! learns of exits through pidfds (reaping its own children), and finishes
//! each queue with the exit status.
//!
//! The thread waits in a single `epoll` set (level triggered) holding every
//! pipe and pidfd, and one inotify instance with a watch on the directory of
//! each followed log file: a file is read when it changes, never polled, and
//! is held open only while it is being read (so following costs no file
//! descriptor while the file is quiet). Only processes without a pidfd, and
//! files whose directory cannot be watched, need a periodic tick. It starts
//! with the first process and runs for the life of the program. Registering
//! a process is a few `epoll_ctl` and `inotify_add_watch` calls; the thread
//! is woken only when something happened.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use harness_core::{ExitStatus, OutputLine, OutputStream};
use rustix::event::{Timespec, epoll};

use crate::events::{ExitCell, Item, LineSplitter, Shared, SpaceWake};
use crate::proc::{self, ProcessIdentity};

const CHUNK: usize = 16 * 1024;
/// How often log files (and `/proc`, for processes without a pidfd) are
/// looked at while nothing else happens.
pub(crate) const FOLLOW_TICK: Duration = Duration::from_millis(50);
/// After exit, read at most this many chunks more from each pipe (a leftover
/// grandchild may keep writing forever).
const DRAIN_CHUNKS: usize = 1024;
/// Chunks read from one pipe per readiness before the others get their turn.
const PIPE_BURST: usize = 8;
/// Chunks read from one log file per turn before the others get theirs.
const FILE_BURST: usize = 64;

/// Event keys: the entry id shifted left by two, plus which descriptor.
const SLOT_OUT: usize = 0;
const SLOT_ERR: usize = 1;
const SLOT_EXIT: usize = 2;

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

/// How an exit reported by `waitid` ended.
pub(crate) fn wait_status(st: rustix::process::WaitIdStatus) -> ExitStatus {
    match (st.exit_status(), st.terminating_signal()) {
        (Some(code), _) if st.exited() => ExitStatus::Code(code),
        (_, Some(sig)) => ExitStatus::Signal(sig),
        _ => ExitStatus::Unknown,
    }
}

/// The start time of a child this program launched, read from `/proc` at
/// most once. The child is reaped only while this is held with the start
/// time known (see [`StartTime::before_reap`]), so whenever it is read the
/// pid still belongs to the child (alive or a zombie): a reused pid is never
/// mistaken for it.
#[derive(Debug)]
pub(crate) struct StartTime {
    pid: u32,
    ticks: Mutex<Option<u64>>,
}

impl StartTime {
    pub(crate) fn new(pid: u32) -> Arc<StartTime> {
        Arc::new(StartTime {
            pid,
            ticks: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<u64>> {
        // Holds a plain number: a poisoned lock is still consistent.
        self.ticks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The start time, read now if it was not yet (0 when `/proc` cannot tell).
    pub(crate) fn get(&self) -> u64 {
        let mut ticks = self.lock();
        *ticks.get_or_insert_with(|| read_start(self.pid))
    }

    /// Locks with the start time known: reap while holding the guard.
    pub(crate) fn before_reap(&self) -> MutexGuard<'_, Option<u64>> {
        let mut ticks = self.lock();
        ticks.get_or_insert_with(|| read_start(self.pid));
        ticks
    }
}

fn read_start(pid: u32) -> u64 {
    proc::read_stat(pid).map_or(0, |s| s.start_time)
}

/// How the pump learns that a process ended.
pub(crate) enum ExitWatch {
    /// A child of ours: its pidfd turns readable when it ends; then it is reaped.
    Reap {
        /// The child's pidfd.
        pidfd: OwnedFd,
        /// Read before reaping.
        start: Arc<StartTime>,
    },
    /// A child of ours without a pidfd: a waiting thread reaps it and
    /// reports the status to the pump.
    Reported,
    /// A process we did not start: its pidfd turns readable when it ends; it
    /// is left for its parent to reap.
    Peek(OwnedFd),
    /// A process we did not start, without a pidfd: `/proc` is looked at on
    /// every tick.
    Proc(ProcessIdentity),
}

/// One pipe being drained.
pub(crate) struct PipeSource {
    file: Option<File>,
    splitter: LineSplitter,
}

impl PipeSource {
    /// `file` is made non-blocking.
    pub(crate) fn new(
        file: Option<OwnedFd>,
        stream: OutputStream,
        max_line: usize,
    ) -> io::Result<Self> {
        if let Some(fd) = &file {
            rustix::io::ioctl_fionbio(fd, true)?;
        }
        Ok(PipeSource {
            file: file.map(File::from),
            splitter: LineSplitter::new(stream, max_line, 0),
        })
    }

    /// Reads up to `chunks` chunks without waiting; false once the pipe is
    /// closed (end of file or error).
    fn read(&mut self, shared: &Shared, buf: &mut [u8], chunks: usize) -> bool {
        let Some(file) = &mut self.file else {
            return false;
        };
        let mut left = chunks;
        while left > 0 {
            match file.read(buf) {
                Ok(0) => return false,
                Ok(n) => {
                    deliver(shared, &mut self.splitter, &buf[..n], true);
                    left -= 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }
}

/// One log file being followed.
pub(crate) struct FileSource {
    path: PathBuf,
    /// Open while being read; let go at its end once its directory is
    /// watched (reopened by path when it changes).
    file: Option<File>,
    /// True once changes to the file are reported by inotify.
    watched: bool,
    splitter: LineSplitter,
}

impl FileSource {
    pub(crate) fn new(
        path: PathBuf,
        file: File,
        stream: OutputStream,
        max_line: usize,
        from: u64,
    ) -> Self {
        FileSource {
            path,
            file: Some(file),
            watched: false,
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
        let file = match self.file.take() {
            Some(f) => f,
            None => File::open(&self.path)?,
        };
        let n = file.read_at(buf, self.splitter.pos)?;
        if n == 0 {
            if file.metadata()?.len() < self.splitter.pos {
                self.splitter.restart_at(0);
            }
            if !self.watched {
                self.file = Some(file);
            }
            return Ok(false);
        }
        self.file = Some(file);
        deliver(shared, &mut self.splitter, &buf[..n], false);
        Ok(true)
    }
}

/// Where a process's output comes from.
pub(crate) enum Output {
    /// Its stdout and stderr pipes.
    Pipes {
        /// Stdout.
        out: PipeSource,
        /// Stderr.
        err: PipeSource,
    },
    /// Its log files (none when attached without logs).
    Files(Vec<FileSource>),
}

/// A process for the pump to watch: where its events go, how its exit is
/// seen, where its output comes from.
pub(crate) struct Watch {
    /// Its queue; for [`Output::Files`] made by [`Pump::files_queue`].
    pub(crate) shared: Arc<Shared>,
    /// Set when it ends.
    pub(crate) exit: Arc<ExitCell>,
    /// How its end is seen.
    pub(crate) watch: ExitWatch,
    /// Its output.
    pub(crate) output: Output,
}

/// A registered process, owned by the pump thread.
struct Entry {
    id: usize,
    w: Watch,
    /// How it ended, once the pump knows.
    status: Option<ExitStatus>,
    /// Files to look at before waiting (new, woken for room, or not done).
    follow_now: bool,
    /// The inotify watches on the directories of its log files.
    wds: Vec<i32>,
}

impl Entry {
    /// True if it needs the tick: log files that no watch reports, or `/proc`
    /// to watch.
    fn ticks(&self) -> bool {
        matches!(&self.w.output, Output::Files(f) if f.iter().any(|f| !f.watched))
            || matches!(self.w.watch, ExitWatch::Proc(_))
    }

    fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        match &self.w.watch {
            ExitWatch::Reap { pidfd, .. } | ExitWatch::Peek(pidfd) => Some(pidfd.as_fd()),
            ExitWatch::Reported | ExitWatch::Proc(_) => None,
        }
    }

    /// The pidfd is readable: find out how the process ended.
    fn on_exit_ready(&mut self, poller: &Poller) {
        if self.status.is_some() {
            return;
        }
        use rustix::process::{WaitId, WaitIdOptions, waitid};
        let status = match &self.w.watch {
            ExitWatch::Reap { pidfd, start } => {
                let _known = start.before_reap();
                match waitid(
                    WaitId::PidFd(pidfd.as_fd()),
                    WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
                ) {
                    Ok(Some(st)) => wait_status(st),
                    // Readable but not yet waitable: look again next time.
                    Ok(None) => return,
                    // Reaped by someone else.
                    Err(_) => ExitStatus::Unknown,
                }
            }
            ExitWatch::Peek(pidfd) => peek_status(pidfd.as_fd()),
            ExitWatch::Reported | ExitWatch::Proc(_) => return,
        };
        if let Some(fd) = self.pidfd() {
            let _ = poller.delete(fd);
        }
        self.set_status(status);
    }

    fn set_status(&mut self, status: ExitStatus) {
        self.status = Some(status);
        self.w.exit.set(status);
        self.follow_now = true;
    }

    /// A tick: looks at `/proc` for a process without a pidfd.
    fn on_tick(&mut self) {
        if let ExitWatch::Proc(id) = &self.w.watch
            && self.status.is_none()
            && id.check().is_err()
        {
            self.set_status(ExitStatus::Unknown);
        }
        self.follow_now = true;
    }

    /// Reads the pipe of `slot`; forgets it once closed.
    fn on_pipe_ready(&mut self, slot: usize, poller: &Poller, buf: &mut [u8], chunks: usize) {
        let Output::Pipes { out, err } = &mut self.w.output else {
            return;
        };
        let src = if slot == SLOT_OUT { out } else { err };
        if !src.read(&self.w.shared, buf, chunks)
            && let Some(file) = src.file.take()
        {
            let _ = poller.delete(&file);
        }
    }

    /// Moves what it can forward once its exit is known or its files are due.
    fn advance(&mut self, poller: &Poller, buf: &mut [u8]) -> Advance {
        match &mut self.w.output {
            Output::Pipes { out, err } => {
                let Some(status) = self.status else {
                    return Advance::Wait;
                };
                // What is in the pipes already, and no more.
                for src in [out, err] {
                    src.read(&self.w.shared, buf, DRAIN_CHUNKS);
                    if let Some(file) = src.file.take() {
                        let _ = poller.delete(&file);
                    }
                    flush(&self.w.shared, &mut src.splitter);
                }
                self.w.shared.finish(status);
                Advance::Done
            }
            Output::Files(sources) => {
                if !self.follow_now {
                    return Advance::Wait;
                }
                self.follow_now = false;
                follow(&self.w.shared, sources, self.status, buf)
            }
        }
    }

    /// Deletes its descriptors from the poller (before they are closed).
    fn forget(&mut self, poller: &Poller) {
        if self.status.is_none()
            && let Some(fd) = self.pidfd()
        {
            let _ = poller.delete(fd);
        }
        if let Output::Pipes { out, err } = &mut self.w.output {
            for src in [out, err] {
                if let Some(file) = src.file.take() {
                    let _ = poller.delete(&file);
                }
            }
        }
    }
}

/// What became of an entry after [`Entry::advance`].
#[derive(Debug, PartialEq, Eq)]
enum Advance {
    /// Finished: its queue holds the exit status.
    Done,
    /// Nothing to do until an event, a tick or room in the queue.
    Wait,
    /// More to read right away.
    Again,
}

/// One turn of following log files: reads while the queue has room (the file
/// holds the rest, nothing is dropped); once `exited` is known and every file
/// is read to its end, flushes and finishes the queue.
fn follow(
    shared: &Shared,
    sources: &mut [FileSource],
    exited: Option<ExitStatus>,
    buf: &mut [u8],
) -> Advance {
    for _ in 0..FILE_BURST {
        if shared.room().is_none() {
            // Nobody listens any more: only the exit matters.
            return match exited {
                Some(status) => {
                    shared.finish(status);
                    Advance::Done
                }
                None => Advance::Wait,
            };
        }
        let mut progressed = false;
        let mut all_read = true;
        let mut full = false;
        for src in sources.iter_mut() {
            match shared.room() {
                Some((lines, bytes)) if lines > 0 && bytes > 0 => {}
                _ => {
                    all_read = false;
                    full = true;
                    continue;
                }
            }
            // An unreadable file counts as read to its end.
            if let Ok(true) = src.read_chunk(shared, buf) {
                progressed = true;
                all_read = false;
            }
        }
        if let Some(status) = exited
            && all_read
        {
            for src in sources.iter_mut() {
                flush(shared, &mut src.splitter);
            }
            shared.finish(status);
            return Advance::Done;
        }
        if full && !progressed {
            // Woken when the consumer makes room; if it already did, go on.
            if shared.wait_for_room() {
                return Advance::Wait;
            }
            continue;
        }
        if !progressed {
            return Advance::Wait;
        }
    }
    Advance::Again
}

/// How an ended process ended, when we are its parent (e.g. a subreaper that
/// adopted it); it is left unreaped for whoever reaps it. `Unknown` otherwise.
pub(crate) fn peek_status(fd: BorrowedFd<'_>) -> ExitStatus {
    use rustix::process::{WaitId, WaitIdOptions, waitid};
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    match waitid(WaitId::PidFd(fd), opts) {
        Ok(Some(st)) => wait_status(st),
        _ => ExitStatus::Unknown,
    }
}

/// Key of the eventfd that wakes the pump thread.
const WAKE_KEY: u64 = u64::MAX;
/// Key of the inotify instance.
const INOTIFY_KEY: u64 = u64::MAX - 1;

/// What inotify reported in one wait.
#[derive(Default)]
struct Changes {
    /// Watches whose directory saw a file change.
    wds: Vec<i32>,
    /// The kernel's event queue overflowed: anything may have changed.
    overflow: bool,
}

/// An `epoll` set, level triggered, an eventfd to wake its waiter, and an
/// inotify instance (absent where the kernel refuses one: files are then
/// followed by the tick).
struct Poller {
    epoll: OwnedFd,
    wake: OwnedFd,
    inotify: Option<OwnedFd>,
    /// Entries per watch descriptor: a watch is removed when its last user goes.
    watch_users: Mutex<HashMap<i32, usize>>,
}

impl Poller {
    fn new() -> io::Result<Poller> {
        use rustix::event::{EventfdFlags, eventfd};
        use rustix::fs::inotify;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &wake,
            epoll::EventData::new_u64(WAKE_KEY),
            epoll::EventFlags::IN,
        )?;
        let inotify = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .ok()
            .filter(|fd| {
                epoll::add(
                    &epoll,
                    fd,
                    epoll::EventData::new_u64(INOTIFY_KEY),
                    epoll::EventFlags::IN,
                )
                .is_ok()
            });
        Ok(Poller {
            epoll,
            wake,
            inotify,
            watch_users: Mutex::new(HashMap::new()),
        })
    }

    fn watch_users(&self) -> MutexGuard<'_, HashMap<i32, usize>> {
        // Every update is one insert or removal: a poisoned lock is consistent.
        self.watch_users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches directory `dir` for files changing in it; its watch descriptor.
    fn watch_dir(&self, dir: &Path) -> Option<i32> {
        use rustix::fs::inotify::{WatchFlags, add_watch};
        let inotify = self.inotify.as_ref()?;
        let mut users = self.watch_users();
        let flags = WatchFlags::MODIFY | WatchFlags::CREATE | WatchFlags::MOVED_TO;
        let wd = add_watch(inotify, dir, flags).ok()?;
        *users.entry(wd).or_default() += 1;
        Some(wd)
    }

    /// One user of watch `wd` is gone; the last removes it.
    fn unwatch(&self, wd: i32) {
        let Some(inotify) = &self.inotify else { return };
        let mut users = self.watch_users();
        if let Some(n) = users.get_mut(&wd) {
            *n -= 1;
            if *n == 0 {
                users.remove(&wd);
                let _ = rustix::fs::inotify::remove_watch(inotify, wd);
            }
        }
    }

    /// Reads every pending inotify event into `changes`.
    fn read_changes(&self, changes: &mut Changes) {
        use rustix::fs::inotify::{ReadFlags, Reader};
        let Some(inotify) = &self.inotify else { return };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = Reader::new(inotify, &mut buf);
        while let Ok(ev) = reader.next() {
            if ev.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                changes.overflow = true;
            } else {
                changes.wds.push(ev.wd());
            }
        }
    }

    /// Reports `fd` readable (or hung up) under `key` until it is deleted.
    fn add(&self, fd: impl AsFd, key: usize) -> io::Result<()> {
        epoll::add(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(key as u64),
            epoll::EventFlags::IN,
        )?;
        Ok(())
    }

    fn delete(&self, fd: impl AsFd) -> io::Result<()> {
        epoll::delete(&self.epoll, fd)?;
        Ok(())
    }

    /// Wakes the waiter (now, or at its next wait).
    fn notify(&self) -> io::Result<()> {
        rustix::io::write(&self.wake, &1u64.to_ne_bytes())?;
        Ok(())
    }

    /// Waits up to `timeout` (rounded up to whole milliseconds; `None`:
    /// without limit) for events; their keys go to `keys`.
    fn wait(
        &self,
        events: &mut Vec<epoll::Event>,
        keys: &mut Vec<usize>,
        changes: &mut Changes,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        events.clear();
        keys.clear();
        changes.wds.clear();
        changes.overflow = false;
        let timeout = timeout.map(|t| {
            let ms = t.as_nanos().div_ceil(1_000_000);
            Timespec {
                tv_sec: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
                tv_nsec: ((ms % 1000) * 1_000_000) as _,
            }
        });
        match epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(events),
            timeout.as_ref(),
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter() {
            let key = ev.data.u64();
            if key == WAKE_KEY {
                let mut count = [0u8; 8];
                let _ = rustix::io::read(&self.wake, &mut count);
            } else if key == INOTIFY_KEY {
                self.read_changes(changes);
            } else if let Ok(key) = usize::try_from(key) {
                keys.push(key);
            }
        }
        Ok(())
    }
}

/// What other threads hand to the pump thread.
#[derive(Default)]
struct Inbox {
    new: Vec<Entry>,
    /// Entries whose consumer made room.
    room: Vec<usize>,
    /// Exits seen by reaping threads (children without a pidfd).
    exited: Vec<(usize, ExitStatus)>,
}

/// The shared pump: see the module docs.
pub(crate) struct Pump {
    poller: Poller,
    inbox: Mutex<Inbox>,
    next_id: AtomicUsize,
}

static PUMP: OnceLock<Arc<Pump>> = OnceLock::new();
static START: Mutex<()> = Mutex::new(());

impl Pump {
    /// The pump, started on first use.
    pub(crate) fn get() -> io::Result<Arc<Pump>> {
        if let Some(p) = PUMP.get() {
            return Ok(p.clone());
        }
        let _one = START.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = PUMP.get() {
            return Ok(p.clone());
        }
        let pump = Arc::new(Pump {
            poller: Poller::new()?,
            inbox: Mutex::new(Inbox::default()),
            next_id: AtomicUsize::new(0),
        });
        let runner = pump.clone();
        std::thread::Builder::new()
            .name("harness-pump".into())
            .stack_size(256 * 1024)
            .spawn(move || runner.run())?;
        Ok(PUMP.get_or_init(|| pump).clone())
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // Every update is a single push or take: a poisoned lock is consistent.
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh entry id.
    pub(crate) fn next_id(&self) -> usize {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A queue for entry `id` whose files are read again as soon as the
    /// consumer makes room.
    pub(crate) fn files_queue(self: &Arc<Self>, id: usize, capacity: usize) -> Arc<Shared> {
        let pump = Arc::downgrade(self);
        let wake: SpaceWake = Box::new(move || {
            if let Some(pump) = pump.upgrade() {
                pump.inbox().room.push(id);
                let _ = pump.poller.notify();
            }
        });
        Shared::with_space_wake(capacity, Some(wake))
    }

    /// Reports the exit of entry `id` (a child reaped by another thread).
    pub(crate) fn report_exit(&self, id: usize, status: ExitStatus) {
        self.inbox().exited.push((id, status));
        let _ = self.poller.notify();
    }

    /// Starts watching `w` as entry `id`. On error nothing is registered and
    /// `w` is dropped.
    pub(crate) fn register(&self, id: usize, w: Watch) -> io::Result<()> {
        let mut entry = Entry {
            id,
            w,
            status: None,
            follow_now: false,
            wds: Vec::new(),
        };
        // Watched from before the first read: a change after it is reported.
        if let Output::Files(sources) = &mut entry.w.output {
            let mut dirs: Vec<(PathBuf, Option<i32>)> = Vec::new();
            for src in sources.iter_mut() {
                let dir = src.path.parent().unwrap_or(Path::new(".")).to_owned();
                let wd = match dirs.iter().find(|(d, _)| *d == dir) {
                    Some((_, wd)) => *wd,
                    None => {
                        let wd = self.poller.watch_dir(&dir);
                        dirs.push((dir, wd));
                        entry.wds.extend(wd);
                        wd
                    }
                };
                src.watched = wd.is_some();
            }
        }
        let mut added: Vec<BorrowedFd<'_>> = Vec::new();
        let key = |slot: usize| (id << 2) | slot;
        let mut sources: Vec<(BorrowedFd<'_>, usize)> = Vec::new();
        if let Output::Pipes { out, err } = &entry.w.output {
            for (src, slot) in [(out, SLOT_OUT), (err, SLOT_ERR)] {
                if let Some(f) = &src.file {
                    sources.push((f.as_fd(), key(slot)));
                }
            }
        }
        if let Some(fd) = entry.pidfd() {
            sources.push((fd, key(SLOT_EXIT)));
        }
        for (fd, key) in sources {
            if let Err(e) = self.poller.add(fd, key) {
                for fd in added {
                    let _ = self.poller.delete(fd);
                }
                for &wd in &entry.wds {
                    self.poller.unwatch(wd);
                }
                return Err(e);
            }
            added.push(fd);
        }
        drop(added);
        // Events of its descriptors may come before the pump takes the entry
        // from the inbox: level triggering reports them again.
        // Log files are read from the start, without waiting for a change or the tick.
        let first_read =
            entry.ticks() || matches!(&entry.w.output, Output::Files(f) if !f.is_empty());
        entry.follow_now = first_read;
        self.inbox().new.push(entry);
        if first_read {
            // Writing to the eventfd fails only with 2^64 - 1 wake-ups pending.
            let _ = self.poller.notify();
        }
        Ok(())
    }

    fn run(&self) {
        let mut entries: HashMap<usize, Entry> = HashMap::new();
        let mut ticking = 0usize;
        let mut events = Vec::with_capacity(256);
        let mut keys = Vec::with_capacity(256);
        let mut buf = vec![0u8; CHUNK];
        let mut changes = Changes::default();
        // The entries whose files each watch reports.
        let mut watchers: HashMap<i32, Vec<usize>> = HashMap::new();
        let mut next_tick = Instant::now() + FOLLOW_TICK;
        // Entries to move forward in this turn.
        let mut due: Vec<usize> = Vec::new();
        loop {
            let timeout = if !due.is_empty() {
                Some(Duration::ZERO)
            } else if ticking > 0 {
                Some(next_tick.saturating_duration_since(Instant::now()))
            } else {
                None
            };
            if self
                .poller
                .wait(&mut events, &mut keys, &mut changes, timeout)
                .is_err()
            {
                // Out of resources: try again shortly rather than spin.
                std::thread::sleep(Duration::from_millis(10));
            }
            let inbox = std::mem::take(&mut *self.inbox());
            for entry in inbox.new {
                if entry.ticks() {
                    ticking += 1;
                }
                for &wd in &entry.wds {
                    watchers.entry(wd).or_default().push(entry.id);
                }
                if entry.follow_now {
                    due.push(entry.id);
                }
                entries.insert(entry.id, entry);
            }
            for &key in &keys {
                let (id, slot) = (key >> 2, key & 3);
                let Some(entry) = entries.get_mut(&id) else {
                    // Registered but not yet taken from the inbox: level
                    // triggering reports it again.
                    continue;
                };
                if slot == SLOT_EXIT {
                    entry.on_exit_ready(&self.poller);
                    due.push(id);
                } else {
                    entry.on_pipe_ready(slot, &self.poller, &mut buf, PIPE_BURST);
                }
            }
            if changes.overflow {
                for entry in entries.values_mut() {
                    if matches!(entry.w.output, Output::Files(_)) {
                        entry.follow_now = true;
                        due.push(entry.id);
                    }
                }
            }
            for wd in &changes.wds {
                for &id in watchers.get(wd).into_iter().flatten() {
                    if let Some(entry) = entries.get_mut(&id) {
                        entry.follow_now = true;
                        due.push(id);
                    }
                }
            }
            for (id, status) in inbox.exited {
                if let Some(entry) = entries.get_mut(&id) {
                    entry.set_status(status);
                    due.push(id);
                }
            }
            for id in inbox.room {
                if let Some(entry) = entries.get_mut(&id) {
                    entry.follow_now = true;
                    due.push(id);
                }
            }
            if ticking > 0 && Instant::now() >= next_tick {
                next_tick = Instant::now() + FOLLOW_TICK;
                for entry in entries.values_mut().filter(|e| e.ticks()) {
                    entry.on_tick();
                    due.push(entry.id);
                }
            }
            due.sort_unstable();
            due.dedup();
            let mut again = Vec::new();
            for id in due.drain(..) {
                let Some(entry) = entries.get_mut(&id) else {
                    continue;
                };
                match entry.advance(&self.poller, &mut buf) {
                    Advance::Done => {
                        if let Some(mut entry) = entries.remove(&id) {
                            if entry.ticks() {
                                ticking -= 1;
                            }
                            for wd in &entry.wds {
                                if let Some(ids) = watchers.get_mut(wd) {
                                    ids.retain(|&i| i != id);
                                    if ids.is_empty() {
                                        watchers.remove(wd);
                                    }
                                }
                                self.poller.unwatch(*wd);
                            }
                            entry.forget(&self.poller);
                        }
                    }
                    Advance::Again => {
                        entry.follow_now = true;
                        again.push(id);
                    }
                    Advance::Wait => {}
                }
            }
            due = again;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_is_seen_without_a_pidfd_too() {
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let id = ProcessIdentity::of(child.id()).unwrap();
        let pump = Pump::get().unwrap();
        let exit = ExitCell::new();
        let shared = Shared::new(16);
        pump.register(
            pump.next_id(),
            Watch {
                shared: shared.clone(),
                exit: exit.clone(),
                watch: ExitWatch::Proc(id),
                output: Output::Files(Vec::new()),
            },
        )
        .unwrap();
        std::thread::sleep(FOLLOW_TICK * 4);
        assert_eq!(exit.get(), None, "exit seen while running");
        child.kill().unwrap();
        child.wait().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(futures_lite::future::block_on(exit.wait()));
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30))
                .expect("exit seen through /proc"),
            ExitStatus::Unknown
        );
    }
}
