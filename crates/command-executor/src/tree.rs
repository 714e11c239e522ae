//! Without a cgroup (ADR 021): what a process started, found in `/proc`.
//!
//! The members of a launched process are its process group, the
//! descendants of any member (through `ppid` links), the processes whose
//! environment carries its [marker](crate::EnvMarker) (what left the tree
//! and was reparented), and every process once seen as a member while it
//! keeps its start time (so one whose parent died is not lost). Zombies of
//! members that became children of this process (a child subreaper, see
//! [`become_child_subreaper`]) are reaped by pid; the leader never is, its
//! owner reaps it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use harness_core::Signal;

use crate::ExecError;
use crate::proc::{self, ProcessIdentity, Stat};
use crate::scope::EnvMarker;

/// Set once this process is a child subreaper.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): processes
/// orphaned below it are reparented to it instead of to init, so stopping a
/// process without a cgroup still finds, signals and reaps what it left. A
/// process with children of its own that it waits for through `waitpid(-1)`
/// must not call this. Zombies it adopts are reaped when a process is
/// stopped: those of the stopped process's members, and any whose session
/// differs from this process's (it cannot be a child this program started
/// and waits for: those stay in its session).
pub fn become_child_subreaper() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    SUBREAPER.store(true, Ordering::SeqCst);
    Ok(())
}

/// True once [`become_child_subreaper`] succeeded.
pub fn is_child_subreaper() -> bool {
    SUBREAPER.load(Ordering::SeqCst)
}

/// Reaps the zombie `pid`, a child of this process, without waiting.
fn reap(pid: u32) {
    use rustix::process::{WaitId, WaitIdOptions, waitid};
    if let Ok(p) = proc::pid_of(pid) {
        let _ = waitid(
            WaitId::Pid(p),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        );
    }
}

/// The value of `name` in an environment block as `/proc/<pid>/environ`
/// holds it (`NAME=value` entries separated by NUL bytes).
pub fn environ_var<'a>(environ: &'a [u8], name: &str) -> Option<&'a str> {
    environ.split(|&b| b == 0).find_map(|kv| {
        let rest = kv.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        std::str::from_utf8(rest).ok()
    })
}

/// A process and what it started, found again on each [`Tree::scan`].
pub(crate) struct Tree {
    leader: ProcessIdentity,
    /// Its process group is one of it (it leads the group).
    group: bool,
    marker: Option<EnvMarker>,
    /// Every process seen as a member: pid and start time.
    known: HashMap<u32, u64>,
    me: u32,
    my_session: i64,
}

impl Tree {
    pub(crate) fn new(leader: ProcessIdentity, group: bool, marker: Option<EnvMarker>) -> Tree {
        let me = std::process::id();
        Tree {
            leader,
            group,
            marker,
            known: HashMap::new(),
            me,
            my_session: proc::read_stat(me).map_or(-1, |s| s.session),
        }
    }

    /// What this is, for errors.
    fn describe(&self) -> String {
        format!("process {} and what it started", self.leader.pid)
    }

    fn carries_marker(&self, pid: u32, start: u64) -> bool {
        self.marker
            .as_ref()
            .is_some_and(|m| marker_value(&m.name, pid, start).is_some_and(|v| *v == m.value))
    }

    /// One pass over `/proc`: the live members now. Zombies of members
    /// that are children of this process (the leader excepted) are reaped,
    /// and with [`become_child_subreaper`], adopted zombies of another session.
    pub(crate) fn scan(&mut self) -> Vec<ProcessIdentity> {
        self.scan_since(Instant::now())
    }

    /// [`Tree::scan`] from a pass over `/proc` that began at `asked` or later,
    /// shared with every other stop that asked before it began (see [`snapshot_since`]).
    fn scan_since(&mut self, asked: Instant) -> Vec<ProcessIdentity> {
        let all = snapshot_since(asked);
        let all = all.as_slice();
        if let Some(m) = &self.marker {
            forget_gone(&m.name, all);
        }
        let group = self.group && proc::group_is_ours(self.leader);
        let mut members: HashSet<u32> = HashSet::new();
        let mut queue = Vec::new();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for &(pid, st) in all {
            children.entry(st.ppid).or_default().push(pid);
            let is_leader = pid == self.leader.pid
                && (self.leader.start_time == 0 || st.start_time == self.leader.start_time);
            let root = is_leader
                || (group && st.pgrp == i64::from(self.leader.pid))
                || self.known.get(&pid) == Some(&st.start_time)
                || self.carries_marker(pid, st.start_time);
            if root && members.insert(pid) {
                queue.push(pid);
            }
        }
        while let Some(pid) = queue.pop() {
            for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
                if members.insert(child) {
                    queue.push(child);
                }
            }
        }
        let subreaper = is_child_subreaper();
        let mut live = Vec::new();
        for &(pid, st) in all {
            let member = members.contains(&pid);
            if member {
                self.known.insert(pid, st.start_time);
            }
            if st.is_dead() {
                let ours = st.ppid == self.me && pid != self.leader.pid;
                let adopted = subreaper && self.my_session > 0 && st.session != self.my_session;
                if ours && (member || adopted) {
                    reap(pid);
                }
            } else if member {
                live.push(ProcessIdentity {
                    pid,
                    start_time: st.start_time,
                });
            }
        }
        live
    }

    /// [`Tree::scan`] in a task: asks now, then lets the other tasks that stop
    /// at this moment ask too, so that one pass over `/proc` serves them all
    /// (500 services stopped at once: a few passes, not a thousand).
    async fn shared_scan(&mut self) -> Vec<ProcessIdentity> {
        let asked = Instant::now();
        futures_lite::future::yield_now().await;
        self.scan_since(asked)
    }

    /// The processes once seen as members that still live (a cheap look,
    /// by pid; only [`Tree::scan`] finds new ones).
    fn known_live(&self) -> Vec<ProcessIdentity> {
        self.known
            .iter()
            .filter(|&(&pid, &start)| {
                proc::read_stat(pid).is_ok_and(|st| st.start_time == start && !st.is_dead())
            })
            .map(|(&pid, &start_time)| ProcessIdentity { pid, start_time })
            .collect()
    }

    /// True if a pass over `/proc` may find members that the known ones do
    /// not lead to: marked processes, or what is left of the group.
    fn may_have_more(&self) -> bool {
        self.marker.is_some()
            || (self.group
                && proc::group_is_ours(self.leader)
                && proc::pid_of(self.leader.pid)
                    .is_ok_and(|g| rustix::process::test_kill_process_group(g).is_ok()))
    }

    /// Waits until no member is left, or until `deadline`. True if none is.
    /// `/proc` is scanned only once every known member is gone.
    async fn wait_empty(&mut self, deadline: Instant) -> bool {
        let mut pause = Duration::from_millis(5);
        loop {
            if self.known_live().is_empty()
                && (!self.may_have_more() || self.shared_scan().await.is_empty())
            {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            async_io::Timer::after(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Sends `sig` to every member; `Ok(false)` if there is none.
    pub(crate) fn signal(&mut self, sig: Signal) -> Result<bool, ExecError> {
        let live = self.scan();
        self.send(&live, sig)
    }

    /// Sends `sig` to each of `live` (and, for SIGKILL, to the group);
    /// `Ok(false)` if none got it.
    fn send(&self, live: &[ProcessIdentity], sig: Signal) -> Result<bool, ExecError> {
        let mut any = false;
        if sig == Signal::KILL && self.group && proc::group_is_ours(self.leader) {
            any |= proc::signal_group(self.leader, sig).unwrap_or(false);
        }
        for &id in live {
            any |= proc::signal_identity(id, sig)?;
        }
        Ok(any)
    }

    /// SIGTERM (and SIGCONT) to every member, up to `grace` for all to end,
    /// then SIGKILL until none is left.
    pub(crate) async fn stop(&mut self, grace: Duration) -> Result<(), ExecError> {
        let mut live = self.shared_scan().await;
        if !grace.is_zero() {
            if !self.send(&live, Signal::TERM)? {
                return Ok(());
            }
            let _ = self.send(&live, Signal::CONT);
            if self.wait_empty(Instant::now() + grace).await {
                return Ok(());
            }
            live = self.shared_scan().await;
        }
        let deadline = Instant::now() + AFTER_KILL;
        loop {
            self.send(&live, Signal::KILL)?;
            let now = Instant::now();
            if self
                .wait_empty((now + Duration::from_millis(100)).min(deadline))
                .await
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ExecError::StopTimeout {
                    what: self.describe(),
                    waited: AFTER_KILL,
                });
            }
            // Something is left, or new: find all of it again.
            live = self.shared_scan().await;
        }
    }
}

/// The last pass over `/proc`: when it began, and every process it found
/// (pid and stat), this process, init and kernel threads left out.
struct Snapshot {
    began: Instant,
    all: std::sync::Arc<Vec<(u32, Stat)>>,
}

static SNAPSHOT: Mutex<Option<Snapshot>> = Mutex::new(None);

/// Every process now, from a pass over `/proc` that began at `asked` or
/// later: the last pass if it did, else a new one. A pass that began after
/// the moment a stop asked shows everything that existed at that moment
/// and still does, so sharing it loses nothing.
fn snapshot_since(asked: Instant) -> std::sync::Arc<Vec<(u32, Stat)>> {
    let mut last = SNAPSHOT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = last.as_ref()
        && s.began >= asked
    {
        return s.all.clone();
    }
    let began = Instant::now();
    let me = std::process::id();
    // Never this process, init or a kernel thread (children of pid 2),
    // whatever a damaged record says.
    let all: std::sync::Arc<Vec<(u32, Stat)>> = std::sync::Arc::new(
        proc::all_pids()
            .into_iter()
            .filter(|&pid| pid != me && pid > 2)
            .filter_map(|pid| proc::read_stat(pid).ok().map(|s| (pid, s)))
            .filter(|(_, st)| st.ppid != 2)
            .collect(),
    );
    *last = Some(Snapshot {
        began,
        all: all.clone(),
    });
    all
}

/// The value of variable `name` in the environment of each process (pid and
/// start time) looked at, read once for all stops: a stop looks at every
/// process, and many may stop at once.
type EnvironCache = HashMap<String, HashMap<(u32, u64), Option<String>>>;

fn environ_cache() -> std::sync::MutexGuard<'static, EnvironCache> {
    static CACHE: OnceLock<Mutex<EnvironCache>> = OnceLock::new();
    CACHE
        .get_or_init(Mutex::default)
        .lock()
        // Holds only values read from /proc: a poisoned lock is still consistent.
        .unwrap_or_else(|p| p.into_inner())
}

/// The value of `name` in the environment of process `pid` started at `start`.
fn marker_value(name: &str, pid: u32, start: u64) -> Option<String> {
    if let Some(known) = environ_cache().get(name).and_then(|m| m.get(&(pid, start))) {
        return known.clone();
    }
    let value = std::fs::read(format!("/proc/{pid}/environ"))
        .ok()
        .and_then(|env| environ_var(&env, name).map(str::to_owned));
    // A zombie shows no environment: not worth keeping.
    if proc::read_stat(pid).is_ok_and(|st| st.start_time == start && !st.is_dead()) {
        environ_cache()
            .entry(name.to_owned())
            .or_default()
            .insert((pid, start), value.clone());
    }
    value
}

/// Forgets the processes of the cache that `all` (a pass over `/proc`) no
/// longer shows.
fn forget_gone(name: &str, all: &[(u32, Stat)]) {
    let now: HashSet<(u32, u64)> = all.iter().map(|(pid, st)| (*pid, st.start_time)).collect();
    if let Some(m) = environ_cache().get_mut(name) {
        m.retain(|k, _| now.contains(k));
    }
}

/// How long to keep killing what is left after the first SIGKILL before
/// reporting it.
const AFTER_KILL: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_and_kernel_threads_are_never_members() {
        for pid in [1, 2] {
            let Ok(id) = ProcessIdentity::of(pid) else {
                continue;
            };
            let mut tree = Tree::new(id, true, None);
            assert!(tree.scan().is_empty(), "pid {pid}");
        }
    }

    #[test]
    fn environ_values_are_found_by_exact_name() {
        let env = b"RUN_X=no\0RUN=abc\0OTHER=1\0";
        assert_eq!(environ_var(env, "RUN"), Some("abc"));
        assert_eq!(environ_var(env, "OTHER"), Some("1"));
        assert_eq!(environ_var(env, "MISSING"), None);
    }
}
