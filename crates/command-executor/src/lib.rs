//! Run one command anywhere and keep control of it: launch, attach, layers.
//!
//! This crate owns running a single [`Command`]:
//!
//! - [`LocalLauncher`] starts it in a process group of its own (and, given a
//!   [`CgroupRoot`], in a cgroup v2 of its own) and returns a
//!   [`ProcessHandle`] (signal, stop all it started, kill, wait, stdin) and an
//!   [`EventStream`] of [`ProcessEvent`]s: `Started`, output lines, `Dropped`
//!   counts, and exactly one `Exited`, always last. Output never blocks the
//!   process: unread lines are dropped and counted, or kept in log files
//!   ([`OutputMode::Files`]) so the process can outlive its launcher.
//! - [`LocalAttacher`] attaches to a process that is already running, guarded
//!   against pid reuse by its [`ProcessIdentity`], learns of its exit through a
//!   pidfd and follows its log files from persisted [`LogOffsets`].
//! - [`Layer`]s rewrite a command without running it: [`LocalLayer`]
//!   (defaults), [`SshLayer`] (`ssh ... host -- 'sh line'`) and [`DockerLayer`]
//!   (`docker exec ...`); they stack. [`LayeredLauncher`] launches through a layer.
//!
//! - Stopping reaches everything a process started (ADR 021): every member
//!   of its cgroup; without one, its process group, its descendants and the
//!   processes still carrying its [`EnvMarker`], found in `/proc` (with
//!   [`become_child_subreaper`], orphans come back to this process and are
//!   reaped). The [`ProcessScope`] (cgroup, marker) is persisted with the
//!   [`ProcessIdentity`] to stop all of it after a restart.
//!
//! Linux only: process groups, cgroups, pidfds and `/proc` are what it builds on.
//!
//! Runtime-agnostic: the crate spawns no tasks on any executor. One thread,
//! shared by every process, reads their output and reaps them (ADR 016);
//! every future here works under smol, tokio or any other executor.
//!
//! ```no_run
//! use std::time::Duration;
//! use command_executor::{Command, LaunchOptions, LocalLauncher, ProcessEvent};
//! use futures_lite::StreamExt;
//!
//! # futures_lite::future::block_on(async {
//! let cmd = Command::new("sh").arg("-c").arg("echo hello; sleep 60");
//! let (handle, mut events) = LocalLauncher::new().spawn(&cmd, LaunchOptions::default())?;
//! while let Some(ev) = events.next().await {
//!     if let ProcessEvent::Output(line) = &ev {
//!         assert_eq!(line.text(), "hello");
//!         break;
//!     }
//! }
//! let status = handle.stop(Duration::from_secs(5)).await?;
//! println!("{status}");
//! # Ok::<(), command_executor::ExecError>(()) });
//! ```

mod attach;
mod cgroup;
mod command;
mod error;
mod events;
mod launch;
mod layer;
mod proc;
mod pump;
mod quote;
mod scope;
mod spawn_cause;
mod tree;

pub use attach::{AttachTarget, AttachedHandle, Attacher, FollowFrom, LocalAttacher};
pub use cgroup::{
    Cgroup2Mount, CgroupRoot, CgroupUnavailable, cgroup_of, parse_mountinfo, parse_proc_cgroup,
};
pub use command::{Command, StdinMode};
pub use error::ExecError;
pub use events::{EventStream, LogOffsets, ProcessEvent};
pub use launch::{
    LaunchOptions, Launcher, LayeredLauncher, LocalLauncher, OutputMode, ProcessHandle,
};
pub use layer::{ControlMaster, DockerLayer, Layer, LocalLayer, SshLayer};
pub use proc::{ProcessIdentity, all_pids, process_group_of};
pub use quote::{shell_command_line, shell_quote};
pub use scope::{EnvMarker, ProcessScope};
pub use tree::{become_child_subreaper, environ_var, is_child_subreaper};

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send_unpin<T: Send + Unpin>() {}

    #[test]
    fn handles_and_streams_cross_threads() {
        send_sync::<ProcessHandle>();
        send_sync::<AttachedHandle>();
        send_sync::<LocalLauncher>();
        send_sync::<LocalAttacher>();
        send_sync::<Command>();
        send_unpin::<EventStream>();
        let _: Box<dyn Launcher> = Box::new(LocalLauncher::new());
        let _: Box<dyn Attacher> = Box::new(LocalAttacher::new());
        let _: Box<dyn Layer> = Box::new(SshLayer::new("h"));
    }
}
