//! Shared vocabulary of harness.
//!
//! Every other crate speaks in these types: validated [`ServiceName`]s, the
//! [`ServiceState`] a service is in, [`Health`], [`ExitStatus`], [`Endpoint`]s,
//! human [`durations`](crate::duration) and POSIX [`Signal`] names. This crate
//! does no I/O and depends on no runtime.

pub mod duration;
pub mod endpoint;
pub mod name;
pub mod output;
pub mod signal;
pub mod spawn;
pub mod state;
pub mod status;

pub use duration::{HumanDuration, parse_duration};
pub use endpoint::Endpoint;
pub use name::{NameError, ProjectName, ServiceName};
pub use output::{OutputLine, OutputStream};
pub use signal::Signal;
pub use spawn::{BoxTask, SharedSpawner, Spawner, ThreadSpawner};
pub use state::{ExitStatus, Health, ServiceKind, ServiceState};
pub use status::{LastExit, ServiceStatus};
