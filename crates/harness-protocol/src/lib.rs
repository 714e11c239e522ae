//! The wire protocol of harness, shared by `harnessd`, the `harness` CLI
//! and applications that drive a daemon.
//!
//! JSON messages ([`wire`]) travel as WebSocket text messages over mutual
//! TLS ([`tls`]). A connection begins with a versioned handshake
//! ([`Hello`] → [`Welcome`]); then requests carry ids chosen by the client
//! and are answered in any order, so one connection carries many requests
//! at once, including streams (logs, events) that the client can cancel.
//! Messages are limited to [`MAX_FRAME_BYTES`].
//!
//! [`Client`] is the client side; the daemon finds its side in [`codec`]
//! and [`tls`]. Where a daemon lives is described by its [`StateDir`].
//! The crate needs no particular async runtime.

pub mod client;
pub mod codec;
pub mod state_dir;
pub mod tls;
pub mod wire;

pub use client::{Client, ClientError, ClientOptions, ResponseStream};
pub use codec::{DecodeError, MAX_FRAME_BYTES, decode_client_message, encode, ws_config};
pub use state_dir::{DaemonAddress, StateDir, StateDirError, resolve_state_dir, write_atomic};
pub use tls::{CertPaths, TlsError, ensure_certificates};
pub use wire::*;
