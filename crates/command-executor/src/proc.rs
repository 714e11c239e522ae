//! Processes and process groups as Linux shows them in `/proc`, and signals to them.

use harness_core::Signal;
use rustix::process::Pid;
use serde::{Deserialize, Serialize};

use crate::ExecError;

/// A process, told apart from any later process that gets the same pid: the
/// pid plus its start time (field 22 of `/proc/<pid>/stat`, in clock ticks since
/// boot). Persist it to re-attach after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// The start time, in clock ticks after boot.
    pub start_time: u64,
}

impl ProcessIdentity {
    /// The identity of the process that now has `pid`.
    pub fn of(pid: u32) -> Result<ProcessIdentity, ExecError> {
        let stat = read_stat(pid)?;
        Ok(ProcessIdentity {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Checks that this very process still runs (the pid was not reused and it
    /// is not a zombie).
    pub fn check(&self) -> Result<(), ExecError> {
        let stat = read_stat(self.pid)?;
        if stat.start_time != self.start_time {
            return Err(ExecError::IdentityMismatch {
                pid: self.pid,
                expected: self.start_time,
                found: stat.start_time,
            });
        }
        if stat.is_dead() {
            return Err(ExecError::NotRunning { pid: self.pid });
        }
        Ok(())
    }
}

/// The pids of every process `/proc` shows now (empty if it cannot be read).
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The process group of `pid` (field 5 of `/proc/<pid>/stat`; 0 for kernel
/// threads).
pub fn process_group_of(pid: u32) -> Result<u32, ExecError> {
    let stat = read_stat(pid)?;
    u32::try_from(stat.pgrp).map_err(|_| ExecError::Proc {
        pid,
        reason: format!("process group {} out of range", stat.pgrp),
    })
}

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Field 3: R, S, D, Z, T, X...
    pub state: u8,
    /// Field 4: the parent.
    pub ppid: u32,
    /// Field 5.
    pub pgrp: i64,
    /// Field 6.
    pub session: i64,
    /// Field 22.
    pub start_time: u64,
}

impl Stat {
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

pub(crate) fn read_stat(pid: u32) -> Result<Stat, ExecError> {
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(bytes) => parse_stat(&bytes).ok_or_else(|| ExecError::Proc {
            pid,
            reason: "unexpected format".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ExecError::NotRunning { pid }),
        Err(e) => Err(ExecError::Proc {
            pid,
            reason: e.to_string(),
        }),
    }
}

/// Parses `pid (comm) state ppid pgrp ... starttime ...`; comm may hold spaces and `)`.
pub(crate) fn parse_stat(bytes: &[u8]) -> Option<Stat> {
    let close = bytes.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(bytes.get(close + 1..)?).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state)
    Some(Stat {
        state: *fields.first()?.as_bytes().first()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub(crate) fn pid_of(pid: u32) -> Result<Pid, ExecError> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(ExecError::NotRunning { pid })
}

pub(crate) fn rustix_signal(sig: Signal) -> rustix::process::Signal {
    rustix::process::Signal::from_named_raw(sig.number())
        .expect("every harness Signal is a named Linux signal")
}

/// Sends `sig` to one process.
pub(crate) fn signal_process(pid: u32, sig: Signal) -> Result<(), ExecError> {
    rustix::process::kill_process(pid_of(pid)?, rustix_signal(sig)).map_err(|e| {
        if e == rustix::io::Errno::SRCH {
            ExecError::NotRunning { pid }
        } else {
            ExecError::Signal {
                target: format!("process {pid}"),
                signal: sig,
                source: e.into(),
            }
        }
    })
}

/// True if the group led by `leader` may still exist: false once another
/// process holds the leader's pid. (The kernel does not hand out a pid while a
/// process group of that id has members, so a new process with that pid proves
/// the old group empty; this keeps signals away from a new group that reuses
/// the id.) A start time of 0 means unknown: no check.
pub(crate) fn group_is_ours(leader: ProcessIdentity) -> bool {
    if leader.start_time == 0 {
        return true;
    }
    match read_stat(leader.pid) {
        Ok(stat) => stat.start_time == leader.start_time,
        Err(_) => true,
    }
}

/// Sends `sig` to every process of the group led by `leader`. `Ok(false)` if
/// the group is empty.
pub(crate) fn signal_group(leader: ProcessIdentity, sig: Signal) -> Result<bool, ExecError> {
    let pgid = leader.pid;
    // `kill(-1)` would reach every process: no group has id 1 (or 0) of ours.
    if pgid <= 1 || !group_is_ours(leader) {
        return Ok(false);
    }
    match rustix::process::kill_process_group(pid_of(pgid)?, rustix_signal(sig)) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(e) => Err(ExecError::Signal {
            target: format!("process group {pgid}"),
            signal: sig,
            source: e.into(),
        }),
    }
}

/// Sends `sig` to the process `id` names, through a pidfd opened and then
/// checked against the start time, so a reused pid is never signalled.
/// `Ok(false)` if that process is gone.
pub(crate) fn signal_identity(id: ProcessIdentity, sig: Signal) -> Result<bool, ExecError> {
    let Ok(pid) = pid_of(id.pid) else {
        return Ok(false);
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        // No pidfd (an old kernel) or already gone: by pid, after a fresh check.
        return match read_stat(id.pid) {
            Ok(st) if st.start_time == id.start_time => match signal_process(id.pid, sig) {
                Ok(()) => Ok(true),
                Err(ExecError::NotRunning { .. }) => Ok(false),
                Err(e) => Err(e),
            },
            _ => Ok(false),
        };
    };
    match read_stat(id.pid) {
        Ok(st) if st.start_time == id.start_time => {}
        _ => return Ok(false),
    }
    match rustix::process::pidfd_send_signal(&fd, rustix_signal(sig)) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(e) => Err(ExecError::Signal {
            target: format!("process {}", id.pid),
            signal: sig,
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let line = b"42 (a) b (c) S 1 42 40 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgrp, 42);
        assert_eq!(s.session, 40);
        assert_eq!(s.start_time, 98765);
        assert!(parse_stat(b"garbage").is_none());
        assert!(parse_stat(b"1 (x) S 1").is_none());
    }

    #[test]
    fn every_harness_signal_maps_to_a_linux_signal() {
        for &sig in Signal::ALL {
            assert_eq!(rustix_signal(sig).as_raw(), sig.number());
        }
    }

    #[test]
    fn a_group_whose_leader_pid_was_reused_is_left_alone() {
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        let gone = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        // SIGCONT is harmless should the guard ever fail.
        assert!(!signal_group(gone, Signal::CONT).unwrap());
        assert!(!signal_identity(gone, Signal::CONT).unwrap());
        assert!(signal_identity(me, Signal::CONT).unwrap());
    }

    #[test]
    fn init_and_the_null_group_are_never_signalled_as_a_group() {
        for pid in [0, 1] {
            let id = ProcessIdentity { pid, start_time: 0 };
            assert!(!signal_group(id, Signal::CONT).unwrap());
        }
    }

    #[test]
    fn own_identity_is_readable_and_checks() {
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        me.check().unwrap();
        let wrong = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(matches!(
            wrong.check(),
            Err(ExecError::IdentityMismatch { .. })
        ));
    }
}
